"""``GET /api/live``: Server-Sent Events, one aggregate snapshot per second.

The snapshot is computed at most once a second for all listeners together (single-flight), so a
hundred open dashboards cost Redis what one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from redis.exceptions import RedisError

__all__ = ["LiveFeed", "stream_live"]

INTERVAL_S = 1.0


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


async def stream_live(request: web.Request, feed: LiveFeed) -> web.StreamResponse:
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
