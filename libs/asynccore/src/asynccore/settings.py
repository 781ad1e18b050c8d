"""Typed configuration from the environment (12-factor).

Each service subclasses :class:`ServiceSettings` with its own fields; :func:`load_settings` turns a
bad value into one clear line on stderr and exit status 2, so a misconfigured deploy fails at start-up
instead of at the first request that needs the value.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Literal, TypeVar, cast, get_args

from aiohttp import web
from pydantic import Field, SecretBytes, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

__all__ = [
    "MIN_SECRET_BYTES",
    "ServiceSettings",
    "UserServiceSettings",
    "load_settings",
    "settings_key",
    "strong_secret",
]


class ServiceSettings(BaseSettings):
    """Settings every service shares; field ``x_y`` is read from env var ``X_Y``."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    log_json: bool = True
    # Where run() listens. Loopback by default: a service's own port skips nginx's limits, so only
    # the front door is meant to be reachable from the network. A container sets 0.0.0.0.
    bind_host: str = Field(default="127.0.0.1", min_length=1)
    # Signs every JWT: no default (a published default would let anyone forge tokens), 32 bytes at least.
    jwt_secret: SecretStr
    jwt_ttl_s: int = Field(default=24 * 3600, gt=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    client_max_size: int = Field(default=1024 * 1024, gt=0)
    slow_callback_s: float = Field(default=0.1, gt=0)
    # uvloop in production; "asyncio" (the stdlib loop) lets the benchmark measure what uvloop buys.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        return strong_secret(value)


class UserServiceSettings(ServiceSettings):
    """A service that accepts users' tokens: it also reads the token versions password changes
    publish (asynccore.revocation), from Redis."""

    # All services of a stack must share this Redis database and the prefix.
    revocation_url: str = "redis://127.0.0.1:6379/0"
    revocation_prefix: str = Field(default="auth:", min_length=1)


MIN_SECRET_BYTES = 32


def strong_secret(value: SecretStr) -> SecretStr:
    """A secret of at least 32 bytes that is not a published placeholder (a field validator for every
    token and key a service is given)."""
    if "change-me" in value.get_secret_value().lower():
        raise ValueError("is still the .env.example placeholder: replace it with a random value")
    if len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
        hint = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes (e.g. {hint})")
    return value


S = TypeVar("S", bound=BaseSettings)
T = TypeVar("T", bound=ServiceSettings)

_KEYS: dict[type[ServiceSettings], web.AppKey[Any]] = {}


def settings_key(cls: type[T]) -> web.AppKey[T]:
    """The typed app key of a service's settings class: ``app[settings_key(BlogSettings)]`` is the
    ``BlogSettings`` the app was created with (``create_app`` stores it under the key of its class and
    of every settings class it derives from). The same class always gives the same key."""
    key = _KEYS.get(cls)
    if key is None:
        key = _KEYS[cls] = web.AppKey(f"settings[{cls.__qualname__}]", cls)
    return cast("web.AppKey[T]", key)


_SETTINGS_ERROR_FIELD = re.compile(r'field "([^"]+)"')


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment; on a bad value print one line and exit 2."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = _env_variable(cls, first["loc"])
        given = first.get("input")
        shown = "" if isinstance(given, dict) or _is_secret(cls, first["loc"]) else f" (got {given!r})"
        line = f"config error: {variable}: {first['msg']}{shown}"
    except SettingsError as exc:
        # A complex field (list, dict) whose env value is not valid JSON fails before validation.
        found = _SETTINGS_ERROR_FIELD.search(str(exc))
        variable = _env_variable(cls, (found.group(1),)) if found else "settings"
        line = f"config error: {variable}: cannot parse value ({exc.__cause__ or exc})"
    print(" ".join(line.split()), file=sys.stderr)
    raise SystemExit(2)


def _env_variable(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    """The environment variable an error location comes from, as an operator would type it."""
    if not loc:
        return "settings"
    head, *rest = (str(part) for part in loc)
    # An alias is the variable's full name; a field name gets the model's prefix.
    name = cls.model_config.get("env_prefix", "") + head if head in cls.model_fields else head
    delimiter = cls.model_config.get("env_nested_delimiter") or "."
    return delimiter.join([name, *rest]).upper()


def _is_secret(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> bool:
    """Whether the value must not be echoed (``SecretStr``, ``SecretStr | None`` …)."""
    field = cls.model_fields.get(str(loc[0])) if loc else None
    if field is None:
        return False
    return any(t in (SecretStr, SecretBytes) for t in (field.annotation, *get_args(field.annotation)))
