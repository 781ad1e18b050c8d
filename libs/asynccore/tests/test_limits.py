"""Bulkheads shed with 503 + Retry-After instead of queueing forever; gather_limited bounds concurrency."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Coroutine
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from asynccore.app import add_routes, create_app
from asynccore.errors import ApiError
from asynccore.limits import Bulkhead, DeadlineSweeper, gather_limited
from asynccore.settings import ServiceSettings
from asynccore.testing import wait_until


def bulkhead(limit: int, max_waiting: int, **kwargs: Any) -> Bulkhead:
    return Bulkhead(f"bh-{uuid.uuid4().hex[:8]}", limit, max_waiting, **kwargs)


def rejected(bh: Bulkhead) -> float:
    return REGISTRY.get_sample_value("bulkhead_rejected_total", {"name": bh.name}) or 0.0


def waiting_gauge(bh: Bulkhead) -> float | None:
    return REGISTRY.get_sample_value("bulkhead_waiting", {"name": bh.name})


async def test_bulkhead_sheds_concurrent_load_with_503_and_retry_after() -> None:
    bh = bulkhead(limit=2, max_waiting=2, retry_after_s=3)
    gate = asyncio.Event()

    async def report(request: web.Request) -> web.Response:
        async with bh:
            await gate.wait()
            return web.json_response({"ok": True})

    app = create_app(f"test-{uuid.uuid4().hex[:8]}", ServiceSettings())
    add_routes(app, [web.get("/report", report)])
    async with TestClient(TestServer(app)) as client:

        async def call() -> tuple[int, str | None, Any]:
            async with client.get("/report") as resp:
                return resp.status, resp.headers.get("Retry-After"), await resp.json()

        calls = [asyncio.create_task(call()) for _ in range(8)]
        await wait_until(lambda: sum(c.done() for c in calls) == 4, timeout=5, message="4 shed")
        assert (bh.in_use, bh.waiting, waiting_gauge(bh)) == (2, 2, 2)
        shed = [c.result() for c in calls if c.done()]
        assert shed == [(503, "3", {"errors": {"server": ["overloaded"]}})] * 4
        assert rejected(bh) == 4

        gate.set()
        results = await asyncio.gather(*calls)
    assert sorted(status for status, _, _ in results) == [200] * 4 + [503] * 4
    assert (bh.in_use, bh.waiting, waiting_gauge(bh)) == (0, 0, 0)


async def test_a_queued_caller_gets_its_turn() -> None:
    bh = bulkhead(limit=1, max_waiting=1)
    order: list[str] = []
    release = asyncio.Event()

    async def use(who: str) -> None:
        async with bh:
            order.append(who)
            await release.wait()

    first = asyncio.create_task(use("first"))
    await wait_until(lambda: bh.in_use == 1, timeout=5)
    second = asyncio.create_task(use("second"))
    await wait_until(lambda: bh.waiting == 1, timeout=5)
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
    assert order == ["first", "second"]
    assert rejected(bh) == 0


async def test_the_wait_for_a_slot_is_bounded() -> None:
    bh = bulkhead(limit=1, max_waiting=5, retry_after_s=2, wait_timeout_s=0.1)
    release = asyncio.Event()

    async def hold() -> None:
        async with bh:
            await release.wait()

    holder = asyncio.create_task(hold())
    await wait_until(lambda: bh.in_use == 1, timeout=5)
    started = time.monotonic()
    with pytest.raises(ApiError) as raised:
        async with bh:
            raise AssertionError("must not get a slot")
    assert 0.1 <= time.monotonic() - started < 1
    assert (raised.value.status, raised.value.headers) == (503, {"Retry-After": "2"})
    assert rejected(bh) == 1
    assert bh.waiting == 0
    release.set()
    await holder


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    bh = bulkhead(limit=1, max_waiting=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with bh:
            await release.wait()

    holder = asyncio.create_task(hold())
    await wait_until(lambda: bh.in_use == 1, timeout=5)
    waiter = asyncio.create_task(hold())
    await wait_until(lambda: bh.waiting == 1, timeout=5)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert (bh.waiting, waiting_gauge(bh)) == (0, 0)
    release.set()
    await holder
    async with bh:  # the slot and the queue are both usable again
        assert bh.in_use == 1


async def test_the_slot_is_released_when_the_body_raises() -> None:
    bh = bulkhead(limit=1, max_waiting=0)
    with pytest.raises(KeyError):
        async with bh:
            raise KeyError("x")
    async with bh:
        assert bh.in_use == 1


async def test_gather_limited_never_exceeds_the_limit_and_keeps_order() -> None:
    in_flight = peak = 0

    async def work(i: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001 * (i % 3))
        in_flight -= 1
        return i * i

    results = await gather_limited(4, *(work(i) for i in range(40)))
    assert results == [i * i for i in range(40)]
    assert peak == 4


async def test_gather_limited_first_exception_cancels_the_rest() -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def work(i: int) -> int:
        started.append(i)
        if i == 2:
            await asyncio.sleep(0.01)
            raise ValueError("item 2 is bad")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    coros: list[Coroutine[Any, Any, int]] = [work(i) for i in range(10)]
    with pytest.raises(ValueError, match="item 2 is bad"):
        await asyncio.wait_for(gather_limited(3, *coros), timeout=5)
    assert started == [0, 1, 2]
    assert sorted(cancelled) == [0, 1]
    # The seven never started are closed, not left to warn "never awaited".
    assert all(inspect.getcoroutinestate(c) == inspect.CORO_CLOSED for c in coros)


async def test_cancelling_gather_limited_cancels_everything_in_flight() -> None:
    running: set[int] = set()

    async def work(i: int) -> None:
        running.add(i)
        try:
            await asyncio.Event().wait()
        finally:
            running.discard(i)

    call = asyncio.create_task(gather_limited(2, *(work(i) for i in range(5))))
    await wait_until(lambda: running == {0, 1}, timeout=5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert running == set()


async def test_gather_limited_accepts_futures_and_nothing() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    loop.call_soon(fut.set_result, "ready")
    assert await gather_limited(1, fut, asyncio.sleep(0, "slept")) == ["ready", "slept"]
    assert await gather_limited(3) == []
    with pytest.raises(ValueError, match="limit"):
        await gather_limited(0)


async def test_deadline_sweeper_cancels_a_task_over_time_and_says_so() -> None:
    sweeper = DeadlineSweeper(0.1)
    outcome: list[object] = []

    async def request() -> None:
        task = asyncio.current_task()
        assert task is not None
        generation = sweeper.enter(task)
        try:
            try:
                await asyncio.sleep(5)
            finally:
                expired = sweeper.leave(task, generation)
        except asyncio.CancelledError:
            outcome.append(("expired" if expired else "cancelled", task.cancelling()))
            return
        outcome.append("finished")

    started = time.monotonic()
    await asyncio.wait_for(request(), timeout=5)
    assert outcome == [("expired", 0)]  # the cancellation was consumed, the task is not cancelling
    assert 0.1 <= time.monotonic() - started < 1


async def test_deadline_sweeper_leaves_a_task_in_time_alone() -> None:
    sweeper = DeadlineSweeper(5)
    task = asyncio.current_task()
    assert task is not None
    generation = sweeper.enter(task)
    await asyncio.sleep(0.01)
    assert sweeper.leave(task, generation) is False


async def test_deadline_sweeper_keeps_an_outer_cancellation() -> None:
    """Like asyncio.timeout: when someone else cancels too, the CancelledError is theirs to see."""
    sweeper = DeadlineSweeper(0.05)
    cleaning_up = asyncio.Event()
    seen: list[bool] = []

    async def request() -> None:
        task = asyncio.current_task()
        assert task is not None
        generation = sweeper.enter(task)
        try:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:  # the deadline: clean up slowly, then give up
                cleaning_up.set()
                await asyncio.sleep(5)
                raise
        finally:
            seen.append(sweeper.leave(task, generation))

    task = asyncio.create_task(request())
    await asyncio.wait_for(cleaning_up.wait(), timeout=5)
    task.cancel()  # the outer cancellation, e.g. shutdown, arrives during the clean-up
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [False]
