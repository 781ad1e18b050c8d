"""Connection pools as ``cleanup_ctx`` resources, and the gauges every pool shares.

Each submodule (``redis``, ``mysql``, ``sqlite``, ``http``) opens one kind of pool, stores it under
an ``AppKey``, registers a readiness check and calls :func:`track_pool`. The gauges
``db_pool_size`` (the pool's bound), ``db_pool_in_use`` and ``db_pool_waiting`` are produced by one
collector that reads the live pools when Prometheus scrapes: no per-pool metric objects to register,
so any number of apps (and tests) in one process never collide, and a pool that is closed or garbage
collected simply disappears from the output.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from asynccore.app import SERVICE

__all__ = ["PoolStats", "track_pool", "untrack_pool"]

log = logging.getLogger("asynccore.pools")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int  # how many connections the pool may hold
    in_use: int  # handed out right now
    waiting: int  # callers queued for one


@dataclass(slots=True)
class _Tracked:
    service: str
    name: str
    pool: weakref.ref[Any]
    stats: Callable[[Any], PoolStats]


_tracked: dict[int, _Tracked] = {}


def track_pool(app: web.Application, name: str, pool: T, stats: Callable[[T], PoolStats]) -> None:
    """Report ``stats(pool)`` as ``{service=<app's service>, pool=name}`` for as long as ``pool`` lives.

    ``stats`` receives the pool, so it must not hold a reference to it itself (that would keep the
    pool alive forever).
    """
    key = id(pool)
    ref = weakref.ref(pool, lambda _: _tracked.pop(key, None))
    _tracked[key] = _Tracked(app[SERVICE], name, ref, stats)


def untrack_pool(pool: object) -> None:
    """Stop reporting ``pool`` (call when it is closed)."""
    _tracked.pop(id(pool), None)


class _PoolCollector(Collector):
    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        labels = ["service", "pool"]
        return (
            GaugeMetricFamily("db_pool_size", "Connections the pool may hold (its bound)", labels=labels),
            GaugeMetricFamily("db_pool_in_use", "Pool connections handed out right now", labels=labels),
            GaugeMetricFamily("db_pool_waiting", "Callers waiting for a pool connection", labels=labels),
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # Pools with the same labels (two apps of one service in a test process) are summed, so each
        # label set appears once, as the exposition format requires.
        totals: dict[tuple[str, str], list[int]] = {}
        for tracked in list(_tracked.values()):
            pool = tracked.pool()
            if pool is None:
                continue
            try:
                stats = tracked.stats(pool)
            except Exception:  # one broken pool must not take /metrics down with it
                log.exception("pool stats failed", extra={"pool": tracked.name})
                continue
            total = totals.setdefault((tracked.service, tracked.name), [0, 0, 0])
            total[0] += stats.size
            total[1] += stats.in_use
            total[2] += stats.waiting
        size, in_use, waiting = self._families()
        for labels, (s, u, w) in sorted(totals.items()):
            size.add_metric(labels, s)
            in_use.add_metric(labels, u)
            waiting.add_metric(labels, w)
        yield from (size, in_use, waiting)


REGISTRY.register(_PoolCollector())
