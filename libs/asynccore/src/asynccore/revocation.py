"""Tokens revoked on every service, not only in the one that issued them.

The blog counts a user's password changes in the token's ``ver`` claim. On a change it *publishes*
the new version to Redis (``<REVOCATION_PREFIX>token-version:<sub>``, kept for one token
lifetime: after that every older token has expired anyway); orders and stream refuse a token whose
``ver`` is below the published one. A service remembers a user's published version for ``cache_s``
(1 s), so a change takes effect everywhere within about a second and a busy user costs one Redis GET
per second, not one per request. Lookups for users not remembered are coalesced (aiodataloader): the
users asked for in one turn of the loop cost one ``MGET`` — a flash sale's 1,000 distinct buyers
arriving at once cost a handful of round trips, not 1,000.

Redis out of reach does not stop sign-ins: the check is skipped, counted in
``auth_revocation_unchecked_total`` and logged — a revoked token then lives until Redis answers or the
token expires, whichever comes first (README, "What is protected, and how").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from importlib import resources

import orjson
from aiodataloader import DataLoader
from aiohttp import web
from cachetools import TTLCache
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from asynccore.app import CleanupCtx
from asynccore.auth import Caller, require_caller, unauthorized
from asynccore.pools.redis import open_redis
from asynccore.settings import UserServiceSettings

__all__ = [
    "REVOCATIONS",
    "TokenRevocations",
    "current_caller",
    "publish_token_version",
    "token_revocations",
    "version_key",
]

log = logging.getLogger(__name__)

UNPUBLISHED = Counter(
    "auth_revocation_unpublished_total",
    "Password changes whose token revocation could not reach Redis (other services accept older tokens)",
)
UNCHECKED = Counter(
    "auth_revocation_unchecked_total",
    "Signed-in requests let through without the revocation check because Redis was out of reach",
)
_RAISE = resources.files("asynccore").joinpath("lua/raise_token_version.lua").read_text()
_TIMEOUT_S = 0.25  # a GET answers in ~0.1 ms; an outage must not cost a request a second
_MAX_REMEMBERED = 100_000  # users; at ~300 B each a 30 MB ceiling, the least recently read go first


def version_key(prefix: str, user_id: str) -> str:
    return f"{prefix}token-version:{user_id}"


async def publish_token_version(redis: Redis, prefix: str, user_id: str, version: int, ttl_s: int) -> bool:
    """Make every service refuse ``user_id``'s tokens older than ``version`` (never lowers it).

    ``False`` (counted, logged as an error) when Redis is out of reach: the issuing service still
    refuses them, the others do until the older tokens expire.
    """
    args = orjson.dumps({"version": version, "ttl_ms": ttl_s * 1000})
    try:
        await redis.eval(_RAISE, 1, version_key(prefix, user_id), args)
    except RedisError as exc:
        UNPUBLISHED.inc()
        log.error("token revocation for user %s not published: redis out of reach (%s)", user_id, exc)
        return False
    return True


class TokenRevocations:
    """The per-service check: :meth:`check` raises asynccore's 401 for a token a password change revoked."""

    def __init__(self, redis: Redis, prefix: str, cache_s: float = 1.0) -> None:
        self._redis = redis
        self._prefix = prefix
        # user id -> the future of its published version (None while Redis was out of reach), kept
        # cache_s: concurrent requests of one user share a read, later ones reuse it for cache_s.
        self._known: TTLCache[str, asyncio.Future[int | None]] = TTLCache(_MAX_REMEMBERED, ttl=cache_s)
        self._loader = DataLoader[str, int | None](
            self._read_versions, cache_map=self._known, loop=asyncio.get_running_loop()
        )

    async def publish(self, user_id: str, version: int, ttl_s: int) -> bool:
        """:func:`publish_token_version` on this service's client and prefix."""
        self._loader.clear(user_id)
        return await publish_token_version(self._redis, self._prefix, user_id, version, ttl_s)

    async def check(self, caller: Caller) -> Caller:
        published = await self._loader.load(caller.user_id)
        if published is None:
            UNCHECKED.inc()
        elif caller.version < published:
            raise unauthorized("token revoked: the password changed since it was issued")
        return caller

    async def _read_versions(self, user_ids: list[str]) -> list[int | None]:
        """The published versions of ``user_ids`` by one MGET (0: none published); all ``None`` while
        Redis is out of reach (remembered too: an outage costs one timeout per user per cache_s)."""
        try:
            raw = await self._redis.mget([version_key(self._prefix, user_id) for user_id in user_ids])
        except RedisError as exc:
            log.warning("token revocation not checked: redis out of reach (%s)", type(exc).__name__)
            return [None] * len(user_ids)
        return [int(value) if value is not None else 0 for value in raw]


REVOCATIONS: web.AppKey[TokenRevocations] = web.AppKey("token_revocations", TokenRevocations)


def token_revocations(settings: UserServiceSettings) -> CleanupCtx:
    """A ``cleanup_ctx`` resource: ``app[REVOCATIONS]`` on its own small Redis client. Not a readiness
    check: Redis out of reach degrades the check (counted), it does not take the service out."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        client = open_redis(settings.revocation_url, max_connections=16, timeout_s=_TIMEOUT_S)
        app[REVOCATIONS] = TokenRevocations(client, settings.revocation_prefix)
        try:
            yield
        finally:
            await client.aclose()

    return ctx


async def current_caller(request: web.Request, secret: str) -> Caller:
    """The signed-in caller whose token still counts: 401 without one, or with a bad or revoked one."""
    return await request.app[REVOCATIONS].check(require_caller(request, secret))
