"""Cache-aside for ready-to-send bytes: in process, then Redis, then SQLite — once.

A read names its *family* (for metrics), its key, the versions it depends on and a loader; the
versions' current tokens say which bytes are current. :meth:`Cache.get` composes four units:

* :mod:`blog.versions` — tokens in Redis, a local copy invalidated by Redis's push, a *generation*;
* :mod:`blog.local_store` — the hottest entries in process memory, bounded in real bytes;
* :mod:`blog.singleflight` — one load per key in this process, and one across replicas (fill lock);
* Redis itself, under a key that embeds the tokens (a bump orphans old keys; they expire with jitter).

When Redis fails, a circuit breaker answers for it: reads go to SQLite, still single-flighted, counted
in ``blog_cache_redis_fallbacks_total`` and logged once per outage; the cache resumes by itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from asynccore.resilience import CircuitBreaker
from asynccore.tasks import cancel_and_wait
from blog.local_store import ENTRY_OVERHEAD, Entry, LocalStore, entry_cost, etag_of
from blog.singleflight import UNAVAILABLE, FillLock, RedisUnavailable, SingleFlight
from blog.versions import EPOCH, Versions

__all__ = ["ENTRY_OVERHEAD", "Cache", "Entry", "Unshared", "entry_cost", "etag_of"]

log = logging.getLogger("blog.cache")

MISSES = Counter("blog_cache_misses_total", "Cache reads that had to load from SQLite", ["family"])
JOINS = Counter(
    "blog_cache_singleflight_joins_total", "Reads that joined a load already in flight", ["family"]
)
ERRORS = Counter("blog_cache_errors_total", "Redis errors met while reading or filling", ["family"])
FALLBACKS = Counter("blog_cache_redis_fallbacks_total", "Reads served from SQLite because Redis failed")

Loader = Callable[[], Awaitable[bytes]]

# A cancelled task ends at its next await; close() logs and leaves one still running after this long
# rather than hold up the app's shutdown.
CLOSE_TIMEOUT_S = 5.0


class _HitCounts(Collector):
    """``blog_cache_hits_total``: plain ints per family, turned into samples when scraped.

    A hit is the hot path; prometheus_client's ``inc`` takes a lock (~0.4 µs) that a dict update
    does not, and a scrape every 15 s pays the conversion once (as asynccore's RED metrics do).
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, family: str) -> None:
        self.counts[family] = self.counts.get(family, 0) + 1

    def collect(self) -> Iterator[Metric]:
        hits = CounterMetricFamily(
            "blog_cache_hits", "Cache reads answered from process memory or Redis", labels=["family"]
        )
        for family, n in list(self.counts.items()):
            hits.add_metric([family], n)
        yield hits


_HITS = _HitCounts()
REGISTRY.register(_HITS)


class _Family:
    """Metric children of one family (``labels()`` is too slow to call per read)."""

    __slots__ = ("errors", "joins", "misses")

    def __init__(self, family: str) -> None:
        _HITS.counts.setdefault(family, 0)
        self.misses = MISSES.labels(family)
        self.joins = JOINS.labels(family)
        self.errors = ERRORS.labels(family)


class Unshared(Exception):
    """Raised by a loader whose answer shows nothing that exists (an empty page of a list, say): it is
    sent to this reader and stored nowhere, so made-up filters cannot fill Redis or process memory."""

    def __init__(self, body: bytes) -> None:
        super().__init__("unshared answer")
        self.body = body


async def _answer(load: Loader) -> bytes:
    """``load``'s bytes, an :class:`Unshared` answer included (for reads that store nothing anyway)."""
    try:
        return await load()
    except Unshared as answer:
        return answer.body


def _uncached(body: bytes) -> Entry:
    return Entry(body, etag_of(body), (), 0.0)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("cache invalidation channel stopped", exc_info=task.exception())


class Cache:
    def __init__(
        self,
        redis: Redis,
        url: str,
        *,
        prefix: str,
        ttl_s: float,
        ttl_jitter: float = 0.1,
        lock_ms: int = 2000,
        local_max_bytes: int = 64 * 1024 * 1024,
        enabled: bool = True,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.enabled = enabled
        self.ttl_s = ttl_s
        self.ttl_jitter = ttl_jitter
        self.breaker = breaker or CircuitBreaker(f"blog-cache-{prefix}", failure_threshold=3, reset_after_s=2)
        self.versions = Versions(redis, url, prefix, self.breaker)
        self.local = LocalStore(local_max_bytes)
        self.flights: SingleFlight[Entry] = SingleFlight()
        self.fill_lock = FillLock(redis, self.breaker, lock_ms)
        self._entries = self.local.entries  # peek's one lookup, without a method call
        self._families: dict[str, _Family] = {}
        self._listener: asyncio.Task[Any] | None = None
        self._degraded = False  # serving from SQLite since Redis failed (logged once per outage)
        # Moved by every write in this process before its bump: keys the loads that store nothing, so
        # a read after a write never joins one that started before it. Not the versions generation:
        # that also moves on other replicas' pushes, and readers of one cold row would stop sharing.
        self._writes = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the invalidation channel unless the cache is disabled.

        The channel lives as long as the cache: this object owns the task and cancels it in
        :meth:`close` (an app's task supervisor would wait its whole drain timeout for a task that
        never ends by itself).
        """
        if self.enabled:
            name = f"blog-cache-invalidations-{self.prefix}"
            self._listener = asyncio.create_task(self.versions.listen(), name=name)
            self._listener.add_done_callback(_log_failure)

    async def close(self) -> None:
        """Stop the invalidation channel and the loads in flight; gives up on them after a few seconds."""
        tasks: list[asyncio.Task[Any]] = [*self.flights.tasks(), *self.versions.fetches.tasks()]
        if self._listener is not None:
            tasks.append(self._listener)
        await cancel_and_wait(tasks, CLOSE_TIMEOUT_S)

    # ------------------------------------------------------------------ reads

    def _family(self, family: str) -> _Family:
        metrics = self._families.get(family)
        if metrics is None:
            metrics = self._families[family] = _Family(family)
        return metrics

    def peek(self, family: str, key: str) -> Entry | None:
        """The entry for ``family:key`` if process memory holds it current; no I/O, no await.

        Current: found current at the present versions generation (no invalidation arrived since,
        no bump was missed) and not expired. Anything else is ``None``, and :meth:`get` finds out.
        """
        entry = self._entries.get((family, key))
        if entry is None or entry.checked != self.versions.generation or entry.expires_at <= time.monotonic():
            return None
        _HITS.add(family)
        return entry

    async def get(self, family: str, key: str, deps: tuple[str, ...], load: Loader) -> Entry:
        """The entry for ``family:key`` built by ``load`` at the current versions of ``deps``."""
        if not self.enabled:
            return _uncached(await _answer(load))
        entry = self.peek(family, key)
        if entry is not None:
            return entry
        names = (EPOCH, *deps)
        tokens = self.versions.local(names)
        if tokens is None:
            try:
                tokens = await self.versions.current(names)
            except UNAVAILABLE as exc:
                return await self._fallback(family, key, exc, load)
            self._resumed()
            if tokens is None:  # a row version is missing: the row may not exist
                return await self._unversioned(family, key, names, load)
        elif self._degraded:
            self._resumed()
        entry = self._entries.get((family, key))
        if entry is not None and entry.tokens == tokens and entry.expires_at > time.monotonic():
            _HITS.add(family)
        else:
            entry = await self._fill_once(family, key, tokens, load)
        if self.versions.local(names) == entry.tokens:
            # Current by the local copy as of its present generation: peek serves it until the next
            # invalidation moves the generation.
            entry.checked = self.versions.generation
        return entry

    def _fill_once(self, family: str, key: str, tokens: tuple[str, ...], load: Loader) -> Awaitable[Entry]:
        """:meth:`_fill`, shared by every concurrent reader of ``family:key`` at ``tokens``."""
        joins = self._family(family).joins
        return self.flights.run(
            ((family, key), tokens), lambda: self._fill(family, key, tokens, load), joins.inc
        )

    async def _fill(self, family: str, key: str, tokens: tuple[str, ...], load: Loader) -> Entry:
        """From Redis, else from ``load`` under the fill lock (one replica at a time); kept in process."""
        metrics = self._family(family)

        async def counted() -> bytes:
            metrics.misses.inc()
            return await load()

        stamp = ".".join(tokens)
        value_key = f"{self.prefix}:c:{family}:{key}@{stamp}"
        lock_key = f"{self.prefix}:lock:{family}:{key}@{stamp}"
        ttl_ms = int(self.ttl_s * 1000 * random.uniform(1 - self.ttl_jitter, 1 + self.ttl_jitter))
        try:
            fill = await self.fill_lock.fill(value_key, lock_key, counted, ttl_ms)
        except RedisUnavailable as down:
            metrics.errors.inc()
            return await self._load_degraded(down.__cause__ or down, load)
        except Unshared as answer:
            return _uncached(answer.body)
        if not fill.loaded:
            _HITS.add(family)
        elif not fill.stored:
            metrics.errors.inc()
        entry = Entry(fill.body, etag_of(fill.body), tokens, time.monotonic() + fill.ttl_s)
        return self.local.put((family, key), entry)

    async def _unversioned(self, family: str, key: str, names: tuple[str, ...], load: Loader) -> Entry:
        """A row no write touched for a day — or one that does not exist (see ``is_row_version``).

        Loaded (single-flighted) and sent, but stored nowhere; a row that does not exist fails its
        load and so leaves nothing behind, in Redis or here. One that does gets its version created
        now, so the next read is cached as usual.
        """
        metrics = self._family(family)

        async def load_and_version() -> Entry:
            metrics.misses.inc()
            try:
                body = await load()
            except Unshared as answer:
                return _uncached(answer.body)
            try:
                await self.versions.current(names, create_rows=True)
            except UNAVAILABLE:
                metrics.errors.inc()
            return _uncached(body)

        flight = ("unversioned", family, key, self._writes)
        return await self.flights.run(flight, load_and_version, metrics.joins.inc)

    # ------------------------------------------------------------------ Redis unavailable

    async def _fallback(self, family: str, key: str, exc: BaseException, load: Loader) -> Entry:
        metrics = self._family(family)
        metrics.errors.inc()
        flight = ("fallback", family, key, self._writes)
        return await self.flights.run(flight, lambda: self._load_degraded(exc, load), metrics.joins.inc)

    async def _load_degraded(self, exc: BaseException, load: Loader) -> Entry:
        FALLBACKS.inc()
        if not self._degraded:
            self._degraded = True
            log.warning("redis unavailable (%s: %s); serving from SQLite", type(exc).__name__, exc)
        return _uncached(await _answer(load))

    def _resumed(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info("redis answers again; cache resumed")

    # ------------------------------------------------------------------ writes

    async def invalidate(self, *names: str) -> None:
        """Make everything that depends on ``names`` stale, here and on every replica.

        Call after the write committed. If Redis cannot take the bump, this process stops trusting its
        cache until an epoch bump lands; other replicas catch up when their channel reconnects.
        """
        self._writes += 1
        await self.versions.invalidate(names)
