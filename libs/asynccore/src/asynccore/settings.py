"""Typed configuration from the environment (12-factor).

Each service subclasses :class:`ServiceSettings` with its own fields; :func:`load_settings` turns a
bad value into one clear line on stderr and exit status 2, so a misconfigured deploy fails at start-up
instead of at the first request that needs the value.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServiceSettings", "load_settings", "read_kafka_bootstrap"]


class ServiceSettings(BaseSettings):
    """Settings every service shares; field ``x_y`` is read from env var ``X_Y``."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    log_json: bool = True
    jwt_secret: SecretStr = SecretStr("dev-only-secret-change-me-in-production")
    jwt_ttl_s: int = Field(default=24 * 3600, gt=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    client_max_size: int = Field(default=1024 * 1024, gt=0)
    slow_callback_s: float = Field(default=0.1, gt=0)
    # Where the local stack writes run-time facts (e.g. the mock Kafka bootstrap address).
    asyncstack_run_dir: Path = Path("/tmp/asyncstack")


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment; on a bad value print one line and exit 2."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]).upper() or "settings"
        given = first.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        print(f"config error: {field}: {first['msg']}{shown}", file=sys.stderr)
        raise SystemExit(2) from None


def read_kafka_bootstrap(explicit: str | None, run_dir: Path) -> str:
    """The Kafka bootstrap: ``KAFKA_BOOTSTRAP`` if set, else what the local mock-cluster launcher wrote."""
    if explicit:
        return explicit
    path = run_dir / "kafka.bootstrap"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise RuntimeError(
            f"KAFKA_BOOTSTRAP is not set and {path} does not exist (start deploy/local)"
        ) from None
