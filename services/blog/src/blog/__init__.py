"""blog."""
