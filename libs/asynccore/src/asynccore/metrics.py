"""RED metrics (rate, errors, duration) keyed by route *template*, plus event-loop health.

Routes are labelled by their template (``/api/articles/{slug}``), never the raw path, so label
cardinality is bounded by the route table.

The RED numbers live in plain Python ints and floats and become Prometheus samples only when
``/metrics`` is scraped (:class:`_RedCollector`). prometheus_client takes a lock for every ``inc`` and
``observe``; for the three RED metrics that is ~1.5 µs of every request, paid thousands of times a
second, where a scrape every 15 s pays the conversion once. The samples are the same: names, labels,
cumulative buckets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "CLIENT_GONE",
    "LATENCY_BUCKETS",
    "RedRecorder",
    "loop_lag_ctx",
    "metrics_handler",
    "red_middleware",
    "red_recorder",
    "route_template",
]

log = logging.getLogger("asynccore.metrics")

# 1 ms … 10 s, dense where web latencies live.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUCKET_LABELS = [floatToGoString(b) for b in (*LATENCY_BUCKETS, float("inf"))]  # type: ignore[no-untyped-call]
_SUM = len(LATENCY_BUCKETS) + 1  # index of the running sum after the per-bucket counts

LOOP_LAG = Gauge("event_loop_lag_seconds", "How late a periodic loop callback ran", ["service"])
LOOP_LAG_MAX = Histogram(
    "event_loop_lag_observed_seconds",
    "Distribution of event-loop lag samples",
    ["service"],
    buckets=LATENCY_BUCKETS,
)

UNMATCHED = "unmatched"
CLIENT_GONE = 499  # nginx's code for "the client closed the request before the answer"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_template(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None:
        return UNMATCHED
    resource = info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


class RedRecorder:
    """One service's request count, latency histogram and in-flight count, as plain numbers."""

    __slots__ = ("_counts", "_latency", "in_flight", "service")

    def __init__(self, service: str) -> None:
        self.service = service
        self.in_flight = 0
        self._counts: dict[tuple[str, str, int], int] = {}
        # (route, method) -> [count per bucket (not cumulative) ..., +Inf count, sum of seconds]
        self._latency: dict[tuple[str, str], list[float]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        hist = self._latency.get((route, method))
        if hist is None:
            hist = self._latency[(route, method)] = [0.0] * (_SUM + 1)
        hist[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hist[_SUM] += seconds

    def samples(self) -> Iterator[Metric]:
        counts = CounterMetricFamily(
            "http_requests", "HTTP requests served", labels=["service", "route", "method", "status"]
        )
        for (route, method, status), n in list(self._counts.items()):
            counts.add_metric([self.service, route, method, str(status)], n)
        latency = HistogramMetricFamily(
            "http_request_duration_seconds", "HTTP request latency", labels=["service", "route", "method"]
        )
        for (route, method), hist in list(self._latency.items()):
            cumulative, buckets = 0.0, []
            for label, in_bucket in zip(_BUCKET_LABELS, hist, strict=False):
                cumulative += in_bucket
                buckets.append((label, cumulative))
            latency.add_metric([self.service, route, method], buckets, hist[_SUM])
        in_flight = GaugeMetricFamily(
            "http_requests_in_flight", "HTTP requests being served", labels=["service"]
        )
        in_flight.add_metric([self.service], self.in_flight)
        yield from (counts, latency, in_flight)


class _RedCollector(Collector):
    def __init__(self) -> None:
        self.recorders: dict[str, RedRecorder] = {}

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for recorder in list(self.recorders.values()):
            for family in recorder.samples():
                merged = families.setdefault(family.name, family)
                if merged is not family:
                    merged.samples.extend(family.samples)
        yield from families.values()


_RED = _RedCollector()
REGISTRY.register(_RED)


def red_recorder(service: str) -> RedRecorder:
    """The recorder for ``service``; apps of the same service in one process share it, like labels do."""
    recorder = _RED.recorders.get(service)
    if recorder is None:
        recorder = _RED.recorders[service] = RedRecorder(service)
    return recorder


def red_middleware(service: str) -> Middleware:
    """RED metrics as a middleware of their own (``create_app`` records them in its edge middleware)."""
    red = red_recorder(service)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        red.in_flight += 1
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_GONE  # not a server error: must not page anyone
            raise
        finally:
            red.in_flight -= 1
            red.observe(route_template(request), request.method, status, time.perf_counter() - start)

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
