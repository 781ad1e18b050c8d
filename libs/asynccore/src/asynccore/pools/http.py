"""The app's one outgoing HTTP ``ClientSession``.

One session per app shares keep-alive connections across requests; ``TCPConnector`` limits bound
sockets overall and per host; a ``ClientTimeout`` is always set, so no call can hang forever; and a
trace hook copies the current request's ``X-Request-ID`` onto every outgoing request, so one id
follows a request across services in the logs. There is no readiness check: a remote service being
down is that service's readiness, not ours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import aiohttp
from aiohttp import web

from asynccore.app import CleanupCtx
from asynccore.logs import REQUEST_ID_HEADER, current_request_id
from asynccore.pools import PoolStats, track_pool, untrack_pool

__all__ = ["http_session", "open_http_session"]


async def _add_request_id(
    session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
) -> None:
    rid = current_request_id()
    if rid is not None and REQUEST_ID_HEADER not in params.headers:
        params.headers[REQUEST_ID_HEADER] = rid


def open_http_session(
    *, limit: int = 100, limit_per_host: int = 32, timeout_s: float = 10.0
) -> aiohttp.ClientSession:
    """A session with bounded connections, a total timeout and request-id propagation."""
    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(_add_request_id)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit_per_host),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        trace_configs=[trace],
    )


def _stats(connector: aiohttp.BaseConnector) -> PoolStats:
    return PoolStats(
        size=connector.limit,
        in_use=len(connector._acquired),
        waiting=sum(len(waiters) for waiters in connector._waiters.values()),
    )


def http_session(
    key: web.AppKey[aiohttp.ClientSession],
    *,
    name: str = "http",
    limit: int = 100,
    limit_per_host: int = 32,
    timeout_s: float = 10.0,
) -> CleanupCtx:
    """A ``cleanup_ctx`` resource: ``app[key]`` is the session, closed after the app stops."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        session = open_http_session(limit=limit, limit_per_host=limit_per_host, timeout_s=timeout_s)
        app[key] = session
        connector = session.connector
        assert connector is not None
        track_pool(app, name, connector, _stats)
        try:
            yield
        finally:
            untrack_pool(connector)
            await session.close()

    return ctx
