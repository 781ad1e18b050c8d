"""RED metrics (rate, errors, duration) keyed by route *template*, plus event-loop health.

Routes are labelled by their template (``/api/articles/{slug}``), never the raw path, so label
cardinality is bounded by the route table.

RED is recorded by the edge every route handler is wrapped in at registration
(:func:`asynccore.app.add_routes`), with :class:`RouteRed`: a route's series are found by status
in a dict of that route's own (by method and status for other methods than the route's), so the
route template and the method check cost once per route, and the duration is
``time.perf_counter()`` around the handler (a vDSO read, ns resolution). An aiohttp middleware
or the access-log hook would cost 2-4 µs per request before recording anything.

The numbers live in plain Python ints and floats and become Prometheus samples only when ``/metrics``
is scraped (:class:`_RedCollector`). prometheus_client takes a lock for every ``inc`` and ``observe``;
for the RED metrics that is ~1.5 µs of every request, where a scrape every 15 s pays the conversion
once. The samples are the same: names, labels, cumulative buckets.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence

from aiohttp import web
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
    "RouteRed",
    "bucket_labels",
    "cumulative_buckets",
    "loop_lag_ctx",
    "metrics_handler",
    "red_recorder",
    "route_template",
]

log = logging.getLogger("asynccore.metrics")

# 1 ms … 10 s, dense where web latencies live.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def bucket_labels(bounds_s: Iterable[float]) -> list[str]:
    """The ``le`` labels of histogram buckets with upper bounds ``bounds_s``, ``+Inf`` last."""
    # prometheus_client leaves floatToGoString unannotated; it returns str.
    return [floatToGoString(b) for b in (*bounds_s, float("inf"))]  # type: ignore[no-untyped-call]


def cumulative_buckets(labels: Sequence[str], counts: Iterable[float]) -> list[tuple[str, float]]:
    """Per-bucket counts kept as plain numbers → the cumulative ``(le, count)`` pairs a histogram
    sample wants (for collectors that keep counts themselves and convert only when scraped)."""
    return list(zip(labels, itertools.accumulate(counts), strict=True))


_BUCKET_LABELS = bucket_labels(LATENCY_BUCKETS)
_SUM = len(LATENCY_BUCKETS) + 1  # index of the running sum after the per-bucket counts

LOOP_LAG = Gauge("event_loop_lag_seconds", "How late a periodic loop callback ran", ["service"])
LOOP_LAG_MAX = Histogram(
    "event_loop_lag_observed_seconds",
    "Distribution of event-loop lag samples",
    ["service"],
    buckets=LATENCY_BUCKETS,
)

UNMATCHED = "unmatched"
# Any token is a valid HTTP method; labels keep these and fold the rest into "other".
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
CLIENT_GONE = 499  # nginx's code for "the client closed the request before the answer"


def _method_label(method: str) -> str:
    return method if method in METHODS else "other"


def route_template(request: web.Request) -> str:
    """The template of the route ``request`` matched; ``unmatched`` when it matched none."""
    info = request.match_info
    if info.http_exception is not None:
        return UNMATCHED
    resource = info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


class RedRecorder:
    """One service's request count, latency histogram and in-flight count, as plain numbers.

    A request touches one list: the series of its (route, method, status), whose bucket counts add
    up to its request count. A scrape folds the statuses into the (route, method) histograms.
    """

    __slots__ = ("_series", "_untimed", "in_flight", "service")

    def __init__(self, service: str) -> None:
        self.service = service
        self.in_flight = 0
        # (route, method, status) -> [count per bucket (not cumulative) ..., +Inf count, sum of seconds]
        self._series: dict[tuple[str, str, int], list[float]] = {}
        self._untimed: dict[tuple[str, str, int], int] = {}

    def series(self, route: str, method: str, status: int) -> list[float]:
        """The series of (route, method, status): counts per bucket (not cumulative), then the sum."""
        key = (route, _method_label(method), status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = [0.0] * (_SUM + 1)
        return series

    def count(self, route: str, method: str, status: int) -> None:
        """Count a request that was never answered (it has no duration to observe)."""
        key = (route, _method_label(method), status)
        self._untimed[key] = self._untimed.get(key, 0) + 1

    def samples(self) -> Iterator[Metric]:
        counts: dict[tuple[str, str, int], float] = dict(self._untimed)
        histograms: dict[tuple[str, str], list[float]] = {}
        for (route, method, status), series in list(self._series.items()):
            counts[(route, method, status)] = counts.get((route, method, status), 0) + sum(series[:_SUM])
            folded = histograms.setdefault((route, method), [0.0] * (_SUM + 1))
            for i, value in enumerate(series):
                folded[i] += value
        requests = CounterMetricFamily(
            "http_requests", "HTTP requests served", labels=["service", "route", "method", "status"]
        )
        for (route, method, status), n in counts.items():
            requests.add_metric([self.service, route, method, str(status)], n)
        latency = HistogramMetricFamily(
            "http_request_duration_seconds", "HTTP request latency", labels=["service", "route", "method"]
        )
        for (route, method), hist in histograms.items():
            buckets = cumulative_buckets(_BUCKET_LABELS, hist[:_SUM])
            latency.add_metric([self.service, route, method], buckets, hist[_SUM])
        in_flight = GaugeMetricFamily(
            "http_requests_in_flight", "HTTP requests being served", labels=["service"]
        )
        in_flight.add_metric([self.service], self.in_flight)
        yield from (requests, latency, in_flight)


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


class RouteRed:
    """RED for one registered route: what its edge calls once per answered request.

    Requests in the route's own method find their series by status alone (no key tuple to build);
    others (HEAD on a GET route, any method on a catch-all) by (method, status).
    """

    __slots__ = ("_by_status", "_method", "_others", "_recorder", "_route")

    def __init__(self, recorder: RedRecorder, route: str | None = None, method: str | None = None) -> None:
        self._recorder = recorder
        self._route = route  # None: the template of the route the request matched
        self._method = method
        self._by_status: dict[int, list[float]] = {}
        self._others: dict[tuple[str, int], list[float]] = {}

    def observe(self, request: web.Request, status: int, seconds: float) -> None:
        method = request.method
        series = self._by_status.get(status) if method == self._method else self._others.get((method, status))
        if series is None:
            series = self._new_series(request, status)
        series[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        series[_SUM] += seconds

    def _new_series(self, request: web.Request, status: int) -> list[float]:
        method = request.method
        series = self._recorder.series(self._route or route_template(request), method, status)
        if method == self._method:
            self._by_status[status] = series
        elif method in METHODS:  # odd methods share "other" and are not worth a key each
            self._others[(method, status)] = series
        return series

    def unanswered(self, request: web.Request) -> None:
        """A request cancelled before it was answered: counted as 499, with no duration to observe."""
        self._recorder.count(self._route or route_template(request), request.method, CLIENT_GONE)


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
