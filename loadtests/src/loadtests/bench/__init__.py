"""Micro-benchmarks that drive real server processes with ``wrk`` on loopback."""

import os
import secrets

# The services a benchmark starts refuse to run without a JWT secret (no default in code): each run
# signs with one of its own unless the caller gave one.
os.environ.setdefault("JWT_SECRET", secrets.token_urlsafe(32))
