"""Redis (redis.asyncio) with a bounded, blocking connection pool.

``BlockingConnectionPool`` makes a burst wait (at most ``timeout_s``) for one of ``max_connections``
connections instead of opening unbounded sockets; socket timeouts bound every command, and a command
is retried once, immediately, only on a connection error (a pooled socket that died since its last
use), so a Redis outage costs a caller about ``2 * timeout_s`` at most, never a backoff schedule.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from asynccore.app import EDGE, CleanupCtx, add_readiness_check
from asynccore.pools import PoolStats, track_pool, untrack_pool

__all__ = ["open_redis", "redis_pool"]


def open_redis(url: str, *, max_connections: int = 64, timeout_s: float = 1.0) -> Redis:
    """A client for ``url``; connections are opened lazily, so this works while Redis is down."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
    )
    return Redis.from_pool(pool)


def _stats(client: Redis) -> PoolStats:
    pool: Any = client.connection_pool
    cond = pool._condition
    lock_waiters = cond._lock._waiters or ()
    return PoolStats(
        size=pool.max_connections,
        in_use=len(pool._in_use_connections),
        waiting=len(cond._waiters) + len(lock_waiters),
    )


def redis_pool(
    key: web.AppKey[Redis],
    url: str,
    *,
    name: str = "redis",
    max_connections: int = 64,
    timeout_s: float = 1.0,
) -> CleanupCtx:
    """A ``cleanup_ctx`` resource: ``app[key]`` is a client; ``/readyz`` fails as ``name`` without PONG,
    and a request that finds Redis out of reach (connection refused or lost, a timeout, still loading,
    a read-only replica) is a 503 naming ``name``; a script or type error stays a 500."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        client = open_redis(url, max_connections=max_connections, timeout_s=timeout_s)
        app[key] = client

        async def ping() -> None:
            await client.ping()

        add_readiness_check(app, name, ping)
        app[EDGE].add_unavailable(name, RedisConnectionError, RedisTimeoutError, ReadOnlyError)
        track_pool(app, name, client, _stats)
        try:
            yield
        finally:
            untrack_pool(client)
            await client.aclose()

    return ctx
