"""What the scenarios share: unique names per run, JSON helpers, scenario-level checks."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment

from asynccore.auth import issue_token

RUN_ID = uuid.uuid4().hex[:8]


@events.init.add_listener
def _loop_time_now(**_: Any) -> None:
    """Locust times ``--run-time`` with a gevent timer from the loop's cached clock, which stopped at the
    last loop turn before the locustfile's imports: on a busy box (23 s to start, in CI) the run ended
    at once with 0 requests. Read the clock again just before locust starts that timer."""
    gevent.get_hub().loop.update_now()


def stack_secret(name: str) -> str:
    """The stack's secret ``name``: from the environment, else the secrets.env ``make run`` keeps in its
    run dir (``ASYNCSTACK_RUN_DIR``, default /tmp/asyncstack); "" when neither has it (no default)."""
    if value := os.environ.get(name):
        return value
    path = Path(os.environ.get("ASYNCSTACK_RUN_DIR", "/tmp/asyncstack")) / "secrets.env"
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == name:
                return value
    return ""


SECRET = stack_secret("JWT_SECRET")


def unique(prefix: str) -> str:
    return f"{prefix}-{RUN_ID}-{uuid.uuid4().hex[:8]}"


def member(prefix: str) -> tuple[str, str]:
    """A new signed-in user: its id and its JWT, minted as the blog would (asynccore.auth), signed with
    the stack's ``JWT_SECRET``: load, not sign-ups, is measured."""
    if not SECRET:
        raise RuntimeError("JWT_SECRET is not set and the run dir's secrets.env has none: give the stack's")
    user = unique(prefix)
    return user, issue_token(SECRET, user_id=user, username=user, ttl_s=3600)


def member_token(prefix: str) -> str:
    """A signed-in user's JWT (see :func:`member`)."""
    return member(prefix)[1]


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
