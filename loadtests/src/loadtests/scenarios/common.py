"""What the scenarios share: unique names per run, JSON helpers, scenario-level checks."""

from __future__ import annotations

import os
import uuid
from typing import Any

from locust.env import Environment

from asynccore.auth import issue_token
from asynccore.settings import ServiceSettings

RUN_ID = uuid.uuid4().hex[:8]
SECRET = os.environ.get("JWT_SECRET") or ServiceSettings().jwt_secret.get_secret_value()


def unique(prefix: str) -> str:
    return f"{prefix}-{RUN_ID}-{uuid.uuid4().hex[:8]}"


def member_token(prefix: str) -> str:
    """A signed-in user's JWT, minted as the blog would (asynccore.auth): load, not sign-ups, is measured.

    nginx limits writes per client address *and* credential, so each simulated member has its own
    allowance, as real users behind one address would.
    """
    user = unique(prefix)
    return issue_token(SECRET, user_id=user, username=user, ttl_s=3600)


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def fail_run(environment: Environment, message: str) -> None:
    """Mark the whole run failed (locust exits non-zero) with a reason in its log."""
    environment.process_exit_code = 2
    print(f"SCENARIO CHECK FAILED: {message}", flush=True)


def unwrap(body: dict[str, Any], key: str) -> dict[str, Any]:
    """``{"product": {...}}`` or the bare object: both shapes are accepted."""
    inner = body.get(key)
    return inner if isinstance(inner, dict) else body
