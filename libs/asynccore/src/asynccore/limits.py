"""Bounded concurrency and time: bulkheads that shed load, ``gather`` with a limit, deadlines.

A bulkhead caps how many callers use a dependency at once *and* how many may queue for it. When the
queue is full the caller gets a 503 with ``Retry-After`` at once: under overload a fast "not now" keeps
latency bounded and lets the load balancer or client back off, where an unbounded queue would only
grow until every request in it times out. :class:`DeadlineSweeper` bounds time the same way: it is the
per-request deadline of :func:`asynccore.app.create_app`.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections import deque
from collections.abc import Awaitable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge

from asynccore.errors import ApiError

__all__ = ["Bulkhead", "DeadlineSweeper", "gather_limited"]

T = TypeVar("T")

REJECTED = Counter("bulkhead_rejected_total", "Callers a bulkhead shed with 503", ["name"])
WAITING = Gauge("bulkhead_waiting", "Callers queued for a bulkhead slot", ["name"])


class Bulkhead:
    """At most ``limit`` callers inside, at most ``max_waiting`` queued; the rest are shed with 503.

    ``wait_timeout_s`` bounds how long a queued caller waits for a slot before it is shed too.
    Use as ``async with bulkhead: ...``.
    """

    def __init__(
        self,
        name: str,
        limit: int,
        max_waiting: int,
        retry_after_s: int = 1,
        *,
        wait_timeout_s: float | None = None,
    ) -> None:
        if limit < 1 or max_waiting < 0:
            raise ValueError("a bulkhead needs limit >= 1 and max_waiting >= 0")
        self.name = name
        self.limit = limit
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self.wait_timeout_s = wait_timeout_s
        self._slots = asyncio.Semaphore(limit)
        self._waiting = 0
        self._in_use = 0
        self._rejected = REJECTED.labels(name)
        self._waiting_gauge = WAITING.labels(name)

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return self._waiting

    def _shed(self) -> ApiError:
        self._rejected.inc()
        return ApiError(503, "server", "overloaded", headers={"Retry-After": str(self.retry_after_s)})

    async def __aenter__(self) -> None:
        # ``locked()`` is also true while others queue, so a newcomer never overtakes the queue.
        if self._slots.locked():
            if self._waiting >= self.max_waiting:
                raise self._shed()
            self._waiting += 1
            self._waiting_gauge.inc()
            try:
                async with asyncio.timeout(self.wait_timeout_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise self._shed() from None
            finally:
                self._waiting -= 1
                self._waiting_gauge.dec()
        else:
            await self._slots.acquire()  # a free slot: returns without suspending
        self._in_use += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._in_use -= 1
        self._slots.release()


def _discard(aw: Awaitable[Any]) -> None:
    """Dispose of an awaitable that will never be awaited (no "never awaited" warning, no orphan)."""
    if inspect.iscoroutine(aw):
        aw.close()
    elif isinstance(aw, asyncio.Future):
        aw.cancel()


async def gather_limited(limit: int, *aws: Awaitable[T]) -> list[T]:
    """Await ``aws`` with at most ``limit`` in flight; results in argument order.

    The first exception propagates and cancels everything still running or not yet started. Only
    ``limit`` worker tasks exist at any time, so a million coroutines cost a million coroutine objects,
    not a million tasks.
    """
    if limit < 1:
        raise ValueError("limit must be >= 1")
    results: list[Any] = [None] * len(aws)
    todo: Iterator[tuple[int, Awaitable[T]]] = iter(enumerate(aws))

    async def worker() -> None:
        for index, aw in todo:
            results[index] = await aw

    workers = [asyncio.ensure_future(worker()) for _ in range(min(limit, len(aws)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for task in workers:
            task.cancel()
        for _, aw in todo:
            _discard(aw)
        if workers:
            await asyncio.wait(workers)
        raise
    return results


class DeadlineSweeper:
    """Per-task deadlines enforced by one periodic sweep instead of one timer per task.

    ``asyncio.timeout`` arms and cancels a loop timer per use, a few µs each; for a per-request
    deadline that is a large part of what a fast endpoint costs on top of aiohttp. Here a task joins
    the *current generation* (a set) and leaves it again: no clock is read per request. A sweep every
    ``resolution_s`` (timeout/20, between 5 and 250 ms) opens a new generation and cancels the tasks
    still in the one that is now older than the timeout, so a deadline fires between ``timeout_s``
    and ``timeout_s + 2 * resolution_s`` after it started. The cancellation is consumed exactly as
    ``asyncio.timeout`` does it (``Task.uncancel``), so an outer cancellation (say, shutdown) arriving
    at the same time still propagates::

        generation = sweeper.enter(task)
        try:
            ...
        finally:
            expired = sweeper.leave(task, generation)   # True: the CancelledError was the deadline
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.resolution_s = min(0.25, max(0.005, timeout_s / 20))
        # A generation opened at sweep k is expired at sweep k + ticks + 1: at least timeout_s later.
        self._ticks = math.ceil(timeout_s / self.resolution_s)
        self._generations: deque[set[asyncio.Task[Any]]] = deque([set()])
        self._expired: dict[asyncio.Task[Any], int] = {}  # cancelled by a sweep → its count before
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def enter(self, task: asyncio.Task[Any]) -> set[asyncio.Task[Any]]:
        """Start ``task``'s deadline; returns its generation to hand back to :meth:`leave`."""
        generation = self._generations[-1]
        generation.add(task)
        loop = task.get_loop()
        if self._timer is None or self._timer_loop is not loop:
            self._arm(loop)
        return generation

    def leave(self, task: asyncio.Task[Any], generation: set[asyncio.Task[Any]]) -> bool:
        """End ``task``'s deadline; True if it expired and the cancellation it caused is consumed."""
        generation.discard(task)
        if not self._expired:
            return False
        cancelling = self._expired.pop(task, None)
        return cancelling is not None and task.uncancel() <= cancelling

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer_loop = loop
        self._timer = loop.call_later(self.resolution_s, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        generations = self._generations
        generations.append(set())
        if len(generations) > self._ticks + 1:
            for task in generations.popleft():
                if not task.done():
                    self._expired[task] = task.cancelling()
                    task.cancel()
        if self._timer_loop is not None and any(generations):
            self._arm(self._timer_loop)
        # else idle: the next enter() arms the sweep again
