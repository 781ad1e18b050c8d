"""What the scenarios share: unique names per run, JSON helpers, scenario-level checks."""

from __future__ import annotations

import os
import uuid
from typing import Any

from locust.env import Environment

RUN_ID = uuid.uuid4().hex[:8]


def unique(prefix: str) -> str:
    return f"{prefix}-{RUN_ID}-{uuid.uuid4().hex[:8]}"


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
