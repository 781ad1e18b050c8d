"""RED metrics (rate, errors, duration) keyed by route *template*, plus event-loop health.

Routes are labelled by their template (``/api/articles/{slug}``), never the raw path, so label
cardinality is bounded by the route table. Metric children are cached per label set: ``labels()`` is
the expensive part of prometheus_client on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "LATENCY_BUCKETS",
    "loop_lag_ctx",
    "metrics_handler",
    "red_middleware",
]

log = logging.getLogger("asynccore.metrics")

# 1 ms … 10 s, dense where web latencies live.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("http_requests_total", "HTTP requests served", ["service", "route", "method", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["service", "route", "method"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("http_requests_in_flight", "HTTP requests being served", ["service"])
LOOP_LAG = Gauge("event_loop_lag_seconds", "How late a periodic loop callback ran", ["service"])
LOOP_LAG_MAX = Histogram(
    "event_loop_lag_observed_seconds",
    "Distribution of event-loop lag samples",
    ["service"],
    buckets=LATENCY_BUCKETS,
)

UNMATCHED = "unmatched"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_template(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None:
        return UNMATCHED
    resource = info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


class _Children:
    """Per-app cache of labelled metric children."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.in_flight = IN_FLIGHT.labels(service)
        self._latency: dict[tuple[str, str], Any] = {}
        self._count: dict[tuple[str, str, int], Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method)
        hist = self._latency.get(key)
        if hist is None:
            hist = self._latency[key] = LATENCY.labels(self.service, route, method)
        hist.observe(seconds)
        ckey = (route, method, status)
        counter = self._count.get(ckey)
        if counter is None:
            counter = self._count[ckey] = REQUESTS.labels(self.service, route, method, str(status))
        counter.inc()


def red_middleware(service: str) -> Middleware:
    children = _Children(service)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        children.in_flight.inc()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            children.in_flight.dec()
            children.observe(route_template(request), request.method, status, time.perf_counter() - start)

    return middleware


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def loop_lag_ctx(
    service: str, *, warn_after_s: float, interval_s: float = 0.25
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Sample event-loop lag (how much later than asked a sleep wakes up); log a slow callback."""
    gauge = LOOP_LAG.labels(service)
    hist = LOOP_LAG_MAX.labels(service)

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(interval_s)
            lag = max(0.0, loop.time() - before - interval_s)
            gauge.set(lag)
            if lag > warn_after_s:
                log.warning("event loop blocked for %.3fs (slow callback)", lag, extra={"lag_s": lag})
            hist.observe(lag)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(probe(), name=f"{service}-loop-lag")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return ctx
