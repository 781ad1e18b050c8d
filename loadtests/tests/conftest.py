"""Services refuse to start without a JWT secret (no default in code): these tests sign with their own."""

from __future__ import annotations

import os
import secrets

os.environ.setdefault("JWT_SECRET", secrets.token_urlsafe(32))
