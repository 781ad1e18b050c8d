"""One load per key at a time: in this process and across replicas.

* :class:`SingleFlight` — concurrent callers of one key share one task. A caller that gives up
  (deadline, disconnect) does not cancel the others' load; a failure is shared, never remembered.
* :class:`FillLock` — a value in Redis, loaded by one replica at a time: a short ``SET NX PX`` lock
  lets one replica load while the others poll Redis for the value it stores; a lock whose holder died
  lapses after ``lock_ms`` and the next replica loads itself.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, NamedTuple, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from asynccore.resilience import CircuitBreaker, CircuitOpen

__all__ = ["UNAVAILABLE", "Fill", "FillLock", "RedisUnavailable", "SingleFlight"]

T = TypeVar("T")

# What "Redis is not answering" looks like: its errors, socket errors, timeouts, or a breaker refusing.
UNAVAILABLE: tuple[type[Exception], ...] = (RedisError, OSError, TimeoutError, CircuitOpen)

# The lock is ours while its value is our token; only the owner deletes it.
STORE_AND_UNLOCK = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SingleFlight(Generic[T]):
    """The first caller of a key starts its task; every concurrent caller of that key awaits the same one."""

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[T]] = {}

    def tasks(self) -> list[asyncio.Task[T]]:
        """The tasks in flight (their owner cancels them on close)."""
        return list(self._tasks.values())

    async def run(
        self,
        key: Hashable,
        start: Callable[[], Coroutine[Any, Any, T]],
        on_join: Callable[[], object] | None = None,
    ) -> T:
        """``start()``'s result, shared by all callers of ``key`` while it runs; ``on_join`` per joiner."""
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = asyncio.create_task(start())
            task.add_done_callback(functools.partial(self._done, key))
        elif on_join is not None:
            on_join()
        # shield: a caller that gives up does not cancel the others' load.
        return await asyncio.shield(task)

    def _done(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a load nobody waits for any more is not "never retrieved"


class RedisUnavailable(Exception):
    """Redis could not be asked for the value or its lock (the cause is chained); nothing was loaded."""


class Fill(NamedTuple):
    body: bytes
    ttl_s: float
    loaded: bool  # this replica ran the loader (a miss); False: the value was found in Redis
    stored: bool  # Redis holds the value (False: it failed to take what was loaded)


class FillLock:
    def __init__(self, redis: Redis, breaker: CircuitBreaker, lock_ms: int) -> None:
        self.redis = redis
        self.breaker = breaker
        self.lock_ms = lock_ms
        self.waiting = 0  # fills waiting for another replica's value right now
        self._store_and_unlock = redis.register_script(STORE_AND_UNLOCK)
        self._unlock = redis.register_script(UNLOCK)

    async def fill(
        self, value_key: str, lock_key: str, load: Callable[[], Awaitable[bytes]], ttl_ms: int
    ) -> Fill:
        """The value under ``value_key``; when Redis has none, ``load``'s, stored for ``ttl_ms``.

        A miss costs three round trips: look; take the lock and look again in one MULTI (another
        replica may have filled the key and released its lock in between); store and unlock in one
        script. Raises :class:`RedisUnavailable` when Redis fails before anything was loaded; an
        exception from ``load`` (or its ``Unshared`` answer) passes through and leaves nothing stored.
        """
        token = secrets.token_hex(6)
        owned = False
        try:
            try:
                found = await self._look(value_key)
                if found is None:
                    owned, found = await self._lock_or_look(value_key, lock_key, token)
                    if found is None and not owned:  # another replica is loading it right now
                        found = await self._await_other_replica(value_key, lock_key, ttl_ms)
            except UNAVAILABLE as exc:
                raise RedisUnavailable(str(exc)) from exc
            if found is not None:
                return Fill(found[0], found[1], loaded=False, stored=True)
            body = await load()
            try:
                async with self.breaker:
                    if owned:
                        await self._store_and_unlock(keys=[value_key, lock_key], args=[body, ttl_ms, token])
                        owned = False
                    else:
                        await self.redis.set(value_key, body, px=ttl_ms)
            except UNAVAILABLE:
                return Fill(body, ttl_ms / 1000, loaded=True, stored=False)
            return Fill(body, ttl_ms / 1000, loaded=True, stored=True)
        finally:
            if owned:  # found after all, or the load failed: let the next replica try at once
                await self._unlock_quietly(lock_key, token)

    async def _look(self, value_key: str) -> tuple[bytes, float] | None:
        """The value and its remaining TTL in seconds, or ``None``."""
        async with self.breaker, self.redis.pipeline(transaction=False) as pipe:
            pipe.get(value_key)
            pipe.pttl(value_key)
            body, pttl = await pipe.execute()
        return None if body is None else (body, max(pttl, 0) / 1000)

    async def _lock_or_look(
        self, value_key: str, lock_key: str, token: str
    ) -> tuple[bool, tuple[bytes, float] | None]:
        """Take the lock and look again, at one instant (MULTI): (whether we own it, the value if found)."""
        async with self.breaker, self.redis.pipeline(transaction=True) as pipe:
            pipe.set(lock_key, token, nx=True, px=self.lock_ms)
            pipe.get(value_key)
            pipe.pttl(value_key)
            owned, body, pttl = await pipe.execute()
        return bool(owned), None if body is None else (body, max(pttl, 0) / 1000)

    async def _await_other_replica(
        self, value_key: str, lock_key: str, ttl_ms: int
    ) -> tuple[bytes, float] | None:
        """Poll for the value another replica is loading; ``None`` if its lock lapses without one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_ms / 1000
        delay = 0.002
        self.waiting += 1
        try:
            while loop.time() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
                # MULTI: the filler sets the value before it drops the lock; read both at one instant.
                async with self.breaker, self.redis.pipeline(transaction=True) as pipe:
                    pipe.get(value_key)
                    pipe.exists(lock_key)
                    body, locked = await pipe.execute()
                if body is not None:
                    return body, ttl_ms / 1000
                if not locked:
                    return None
            return None
        finally:
            self.waiting -= 1

    async def _unlock_quietly(self, lock_key: str, token: str) -> None:
        try:
            async with self.breaker:
                await self._unlock(keys=[lock_key], args=[token])
        except UNAVAILABLE:
            pass  # it expires on its own within lock_ms
