"""Stand-ins for third-party services (a payment provider, an SMTP server) for the local stack and tests."""
