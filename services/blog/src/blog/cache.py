"""Cache-aside for ready-to-send bytes: in process, then Redis, then SQLite — once.

A read names its *family* (for metrics), its key, the versions it depends on (see
:mod:`blog.versions`) and a loader. The versions' tokens form the entry's *stamp*:

1. **local** — the process keeps the hottest entries (bounded in bytes); an entry whose stamp equals
   the current one is served with no I/O at all. Stamps come from the push-invalidated local copy of
   the versions; an entry also remembers the versions *generation* it was last found current at, so
   while nothing was invalidated since, :meth:`Cache.peek` serves it on one dict lookup and an int
   comparison, without even reading the versions (the anonymous hit path of every handler).
2. **Redis** — shared by the replicas, under a key that embeds the stamp; a write elsewhere changed
   the stamp, so the old key is never read again and simply expires (TTL with jitter).
3. **SQLite** — on a miss. Concurrent misses of one key in this process share one load
   (single-flight); across replicas a short Redis lock (``SET NX PX``) lets one replica load while
   the others poll Redis for its result. A cold key under any number of readers costs one query.

When Redis fails, a circuit breaker stops asking it (no connect timeout per request); reads go
straight to SQLite, still single-flighted, counted in ``blog_cache_redis_fallbacks_total`` and
logged once per outage. When Redis answers again the cache resumes by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from asynccore.resilience import CircuitBreaker
from asynccore.tasks import cancel_and_wait
from blog.versions import EPOCH, UNAVAILABLE, Versions, new_token

__all__ = ["ENTRY_OVERHEAD", "Cache", "Entry", "Unshared", "entry_cost"]

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

# The fill lock is ours while its value is our token; only the owner deletes it.
STORE_AND_UNLOCK = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


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


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("cache invalidation channel stopped", exc_info=task.exception())


def etag_of(body: bytes) -> str:
    """A strong ETag from the bytes themselves: every replica computes the same one."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


@dataclass(slots=True, eq=False)
class Entry:
    body: bytes
    etag: str
    tokens: tuple[str, ...]  # the version tokens it was built at (empty: not cached)
    expires_at: float  # time.monotonic()
    # The versions generation at which ``tokens`` were last found current (-1: not yet): while the
    # generation has not moved, nothing the entry depends on was invalidated.
    checked: int = -1
    # What a sender derives from the entry once and reuses on every hit (response headers per shape).
    prepared: dict[object, Any] = field(default_factory=dict)
    size: int = 0  # what it costs the process while the local tier holds it (see ``entry_cost``)


class Unshared(Exception):
    """Raised by a loader whose answer shows nothing that exists (an empty page of a list, say): it is
    sent to this reader and stored nowhere, so made-up filters cannot fill Redis or process memory."""

    def __init__(self, body: bytes) -> None:
        super().__init__("unshared answer")
        self.body = body


async def _run(load: Loader) -> tuple[bytes, bool]:
    """``load``'s bytes, and whether they may be stored."""
    try:
        return await load(), True
    except Unshared as answer:
        return answer.body, False


def _uncached(body: bytes) -> Entry:
    return Entry(body, etag_of(body), (), 0.0)


# What an entry costs the process beyond its body's and its key's ``sys.getsizeof``: the Entry, its
# ETag string and tokens tuple, the ``(family, key)`` tuple, the headers a sender prepares for one shape
# (a dict and a CIMultiDict of a few headers), and the local dict's slot with its growth slack.
# Measured with tracemalloc on CPython 3.11 at ~1,070 bytes (165 to 10,000 entries); counted with a
# margin, so the tier's real memory stays under its budget (test_security.py holds it to that).
ENTRY_OVERHEAD = 1150


def entry_cost(key: str, body: bytes) -> int:
    """Bytes an entry really holds in the local tier (the budget counts these, not ``len(body)``)."""
    return sys.getsizeof(body) + sys.getsizeof(key) + ENTRY_OVERHEAD


class _Family:
    """Metric children of one family (``labels()`` is too slow to call per read)."""

    __slots__ = ("errors", "joins", "misses")

    def __init__(self, family: str) -> None:
        _HITS.counts.setdefault(family, 0)
        self.misses = MISSES.labels(family)
        self.joins = JOINS.labels(family)
        self.errors = ERRORS.labels(family)


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
        self.lock_ms = lock_ms
        self.breaker = breaker or CircuitBreaker(f"blog-cache-{prefix}", failure_threshold=3, reset_after_s=2)
        self.versions = Versions(redis, url, prefix, self.breaker)
        self._store_and_unlock = redis.register_script(STORE_AND_UNLOCK)
        self._unlock = redis.register_script(UNLOCK)
        self._local: dict[tuple[str, str], Entry] = {}
        self._local_bytes = 0
        self._local_max_bytes = local_max_bytes
        self._flights: dict[tuple[object, tuple[str, ...]], asyncio.Task[Entry]] = {}
        self._families: dict[str, _Family] = {}
        self._listener: asyncio.Task[Any] | None = None
        # A version bump Redis did not take: until an epoch bump lands, nothing cached is trusted.
        self._missed_bump = False
        self._degraded = False
        # Bumped by every write in this process; keys the fallback loads so a write is never joined.
        self._write_generation = 0

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
        tasks = [t for t in [self._listener, *self._flights.values()] if t is not None]
        await cancel_and_wait(tasks, CLOSE_TIMEOUT_S)

    # ------------------------------------------------------------------ reads

    def _family(self, family: str) -> _Family:
        metrics = self._families.get(family)
        if metrics is None:
            metrics = self._families[family] = _Family(family)
        return metrics

    def peek(self, family: str, key: str) -> Entry | None:
        """The entry for ``family:key`` if process memory holds it current; no I/O, no await.

        Current: found current at the present versions generation (no invalidation arrived since),
        not expired, and the cache in its normal state (Redis reachable, no bump missed). Anything
        else is ``None``, and :meth:`get` finds out properly.
        """
        entry = self._local.get((family, key))
        if (
            entry is None
            or entry.checked != self.versions.generation
            or entry.expires_at <= time.monotonic()
            or self._missed_bump
            or self._degraded
        ):
            return None
        _HITS.add(family)
        return entry

    async def get(self, family: str, key: str, deps: tuple[str, ...], load: Loader) -> Entry:
        """The entry for ``family:key`` built by ``load`` at the current versions of ``deps``."""
        if not self.enabled:
            return _uncached((await _run(load))[0])
        entry = self.peek(family, key)
        if entry is not None:
            return entry
        names = (EPOCH, *deps)
        tokens = self.versions.local(names)
        if tokens is None or self._missed_bump:
            try:
                await self._repair()
                tokens = await self.versions.current(names)
            except UNAVAILABLE as exc:
                return await self._fallback(family, key, exc, load)
            if self._degraded:
                self._resumed()
            if tokens is None:  # a row version is missing: the row may not exist
                return await self._unversioned(family, key, names, load)
        elif self._degraded:
            self._resumed()
        local_key = (family, key)
        entry = self._local.get(local_key)
        if entry is not None and entry.tokens == tokens and entry.expires_at > time.monotonic():
            _HITS.add(family)
        else:
            entry = await self._shared(family, local_key, tokens, self._fill(family, key, tokens, load))
        if self.versions.local(names) == entry.tokens:
            # Current by the local copy, as of its present generation: peek may serve it until the
            # next invalidation moves the generation.
            entry.checked = self.versions.generation
        return entry

    async def _shared(
        self, family: str, flight_key: object, tokens: tuple[str, ...], fill: Awaitable[Entry]
    ) -> Entry:
        """Single-flight: the first caller's ``fill`` runs as a task every concurrent caller awaits."""
        flight_id = (flight_key, tokens)
        task = self._flights.get(flight_id)
        if task is None:
            task = asyncio.ensure_future(fill)
            self._flights[flight_id] = task
            task.add_done_callback(lambda done: self._flight_done(flight_id, done))
        else:
            if asyncio.iscoroutine(fill):
                fill.close()
            self._family(family).joins.inc()
        # shield: a caller that gives up (deadline, disconnect) does not cancel the others' load.
        return await asyncio.shield(task)

    def _flight_done(self, flight_id: tuple[object, tuple[str, ...]], task: asyncio.Task[Entry]) -> None:
        self._flights.pop(flight_id, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so a load nobody waits for any more is not "never retrieved"

    async def _fill(self, family: str, key: str, tokens: tuple[str, ...], load: Loader) -> Entry:
        """Redis, else SQLite under the fill lock: at most one replica loads a key at a time.

        A miss costs three round trips: look; take the lock and look again in one MULTI (another
        replica may have filled the key and released its lock in between); store and unlock in one
        script.
        """
        metrics = self._family(family)
        local_key = (family, key)
        stamp = ".".join(tokens)
        redis_key = f"{self.prefix}:c:{family}:{key}@{stamp}"
        lock_key = f"{self.prefix}:lock:{family}:{key}@{stamp}"
        token = new_token()
        owned = False
        try:
            try:
                found = await self._peek(redis_key)
                if found is None:
                    async with self.breaker, self.redis.pipeline(transaction=True) as pipe:
                        pipe.set(lock_key, token, nx=True, px=self.lock_ms)
                        pipe.get(redis_key)
                        pipe.pttl(redis_key)
                        owned, body, pttl = await pipe.execute()
                    owned = bool(owned)
                    if body is not None:
                        found = (body, max(pttl, 0) / 1000)
                    elif not owned:  # another replica is loading it right now
                        found = await self._await_other_replica(redis_key, lock_key)
            except UNAVAILABLE as exc:
                metrics.errors.inc()
                return await self._load_degraded(exc, load)
            if found is not None:
                _HITS.add(family)
                return self._remember(local_key, self._entry(found[0], tokens, found[1]))
            metrics.misses.inc()
            body, shareable = await _run(load)
            if not shareable:
                return _uncached(body)
            ttl_ms = int(self.ttl_s * 1000 * random.uniform(1 - self.ttl_jitter, 1 + self.ttl_jitter))
            try:
                async with self.breaker:
                    if owned:
                        await self._store_and_unlock(keys=[redis_key, lock_key], args=[body, ttl_ms, token])
                        owned = False
                    else:
                        await self.redis.set(redis_key, body, px=ttl_ms)
            except UNAVAILABLE:
                metrics.errors.inc()
            return self._remember(local_key, self._entry(body, tokens, ttl_ms / 1000))
        finally:
            if owned:  # found after all, or the load failed: let the next replica try at once
                await self._unlock_quietly(lock_key, token)

    async def _peek(self, redis_key: str) -> tuple[bytes, float] | None:
        """The value under ``redis_key`` and its remaining TTL in seconds, or ``None``."""
        async with self.breaker, self.redis.pipeline(transaction=False) as pipe:
            pipe.get(redis_key)
            pipe.pttl(redis_key)
            body, pttl = await pipe.execute()
        return None if body is None else (body, max(pttl, 0) / 1000)

    async def _await_other_replica(self, redis_key: str, lock_key: str) -> tuple[bytes, float] | None:
        """Poll for the value another replica is loading; ``None`` if its lock lapses without one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_ms / 1000
        delay = 0.002
        while loop.time() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            # MULTI: the filler sets the value before it drops the lock; read both at one instant.
            async with self.breaker, self.redis.pipeline(transaction=True) as pipe:
                pipe.get(redis_key)
                pipe.exists(lock_key)
                body, locked = await pipe.execute()
            if body is not None:
                return body, self.ttl_s
            if not locked:
                return None
        return None

    async def _unlock_quietly(self, lock_key: str, token: str) -> None:
        try:
            async with self.breaker:
                await self._unlock(keys=[lock_key], args=[token])
        except UNAVAILABLE:
            pass  # it expires on its own within lock_ms

    @staticmethod
    def _entry(body: bytes, tokens: tuple[str, ...], ttl_s: float) -> Entry:
        return Entry(body, etag_of(body), tokens, time.monotonic() + ttl_s)

    def _remember(self, local_key: tuple[str, str], entry: Entry) -> Entry:
        entry.size = entry_cost(local_key[1], entry.body)
        if entry.size > self._local_max_bytes:
            return entry
        old = self._local.pop(local_key, None)
        if old is not None:
            self._local_bytes -= old.size
        self._local[local_key] = entry
        self._local_bytes += entry.size
        while self._local_bytes > self._local_max_bytes:
            # Oldest first: dicts keep insertion order, and a refreshed entry is re-inserted at the end.
            oldest = next(iter(self._local))
            self._local_bytes -= self._local.pop(oldest).size
        return entry

    # ------------------------------------------------------------------ rows without a version

    async def _unversioned(self, family: str, key: str, names: tuple[str, ...], load: Loader) -> Entry:
        """A row no write touched for a day — or one that does not exist (see ``is_row_version``).

        Loaded (single-flighted) and sent, but stored nowhere; a row that does not exist fails its
        load and so leaves nothing behind, in Redis or here. One that does gets its version created
        now, so the next read is cached as usual.
        """
        fill = self._load_unversioned(family, names, load)
        flight_key = ("unversioned", family, key)
        return await self._shared(family, flight_key, (str(self._write_generation),), fill)

    async def _load_unversioned(self, family: str, names: tuple[str, ...], load: Loader) -> Entry:
        metrics = self._family(family)
        metrics.misses.inc()
        body, shareable = await _run(load)
        if shareable:
            try:
                await self.versions.current(names, create_rows=True)
            except UNAVAILABLE:
                metrics.errors.inc()
        return _uncached(body)

    # ------------------------------------------------------------------ Redis unavailable

    async def _fallback(self, family: str, key: str, exc: BaseException, load: Loader) -> Entry:
        self._family(family).errors.inc()
        fill = self._load_degraded(exc, load)
        flight_key = ("fallback", family, key)
        return await self._shared(family, flight_key, (str(self._write_generation),), fill)

    async def _load_degraded(self, exc: BaseException, load: Loader) -> Entry:
        FALLBACKS.inc()
        if not self._degraded:
            self._degraded = True
            log.warning("redis unavailable (%s: %s); serving from SQLite", type(exc).__name__, exc)
        return _uncached((await _run(load))[0])

    def _resumed(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info("redis answers again; cache resumed")

    async def _repair(self) -> None:
        """After a bump Redis missed, bump the epoch before trusting anything cached again."""
        if self._missed_bump:
            await self.versions.bump([EPOCH])
            self._missed_bump = False

    # ------------------------------------------------------------------ writes

    async def invalidate(self, *names: str) -> None:
        """Make everything that depends on ``names`` stale, here and on every replica.

        Call after the write committed. If Redis cannot take the bump, this process stops trusting its
        cache until an epoch bump lands; other replicas catch up when their channel reconnects.
        """
        self._write_generation += 1
        try:
            await self.versions.bump(names)
        except UNAVAILABLE as exc:
            self._missed_bump = True
            log.warning("could not invalidate %s in redis (%s); cache bypassed until it can", names, exc)
