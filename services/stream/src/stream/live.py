"""``GET /api/live``: Server-Sent Events, one aggregate snapshot per second.

The snapshot is computed at most once a second for all listeners together (single-flight), so a
hundred open dashboards cost Redis what one does. What they do cost is a connection and a task each
for as long as they stay, so open streams are capped per client address and in all
(:class:`LiveLimits`, 503 beyond) - nginx caps them too, but the service's port may be reached
without it, and one replica should not hold every stream nginx allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from asynccore.errors import ApiError
from stream.metrics import LIVE_REFUSED, LIVE_STREAMS

__all__ = ["LiveFeed", "LiveLimits", "client_address", "stream_live"]

INTERVAL_S = 1.0
RETRY_AFTER_S = 5


def client_address(request: web.Request, trusted: Sequence[IPv4Network | IPv6Network]) -> str:
    """The client's address: what a trusted proxy says it is, else the peer's.

    From a peer in ``trusted`` (nginx on loopback), ``X-Real-IP``, else the last ``X-Forwarded-For``
    entry - the one nginx appended; those before it are whatever the client sent. From anyone else
    both headers are the client's own words, and the peer address is what counts.
    """
    peer = _ip(request.remote or "")
    if peer is None:
        return request.remote or "unknown"
    if any(peer in network for network in trusted):
        forwarded = request.headers.get("X-Real-IP") or request.headers.get("X-Forwarded-For") or ""
        named = _ip(forwarded.rpartition(",")[2])
        if named is not None:
            return str(named)
    return str(peer)


def _ip(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text.strip())
    except ValueError:
        return None


class LiveLimits:
    """Open streams, per client address and in all; :meth:`admit` holds a place for one stream."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open = 0
        self._by_client: dict[str, int] = {}

    @contextlib.contextmanager
    def admit(self, client: str) -> Iterator[None]:
        """A place for one stream of ``client`` while the block runs; 503 naming ``request`` if none."""
        if self.open >= self.total:
            raise self._refuse("total", "too many live streams open; retry later")
        held = self._by_client.get(client, 0)
        if held >= self.per_client:
            raise self._refuse("per_client", "too many live streams open from this address; retry later")
        self.open += 1
        self._by_client[client] = held + 1
        LIVE_STREAMS.inc()
        try:
            yield
        finally:
            self.open -= 1
            left = self._by_client[client] - 1
            if left:
                self._by_client[client] = left
            else:
                del self._by_client[client]
            LIVE_STREAMS.dec()

    @staticmethod
    def _refuse(limit: str, message: str) -> ApiError:
        LIVE_REFUSED.labels(limit).inc()
        return ApiError(503, "request", message, headers={"Retry-After": str(RETRY_AFTER_S)})


class LiveFeed:
    def __init__(self, compute: Callable[[], Awaitable[dict[str, object]]]) -> None:
        self._compute = compute
        self._lock = asyncio.Lock()
        self._at = 0.0
        self._body = b""
        self.closing = asyncio.Event()  # set at shutdown: every stream ends

    async def snapshot(self) -> bytes:
        async with self._lock:
            if time.monotonic() - self._at >= INTERVAL_S * 0.9:
                self._body = orjson.dumps(await self._compute())
                self._at = time.monotonic()
            return self._body


async def stream_live(
    request: web.Request, feed: LiveFeed, limits: LiveLimits, client: str
) -> web.StreamResponse:
    with limits.admit(client):
        return await _stream(request, feed)


async def _stream(request: web.Request, feed: LiveFeed) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        while not feed.closing.is_set():
            try:
                async with asyncio.timeout(INTERVAL_S * 5):
                    frame = b"event: aggregate\ndata: " + await feed.snapshot() + b"\n\n"
            except (RedisError, TimeoutError) as exc:  # keep the stream; say why this second is missing
                frame = b"event: error\ndata: " + orjson.dumps({"error": type(exc).__name__}) + b"\n\n"
            await response.write(frame)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INTERVAL_S):
                    await feed.closing.wait()
    return response
