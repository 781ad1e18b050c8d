"""Supervised tasks: failures are logged and counted, never lost; close() drains, then cancels.

And cancelling for good: a lost cancel still stops a loop, a cancel never waits unbounded."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from asynccore.tasks import Supervisor, cancel_and_wait, check_cancelled
from asynccore.testing import wait_until


@pytest.fixture
def supervisor() -> Supervisor:
    return Supervisor(f"test-{uuid.uuid4().hex[:8]}")


def failures(supervisor: Supervisor, task: str) -> float:
    labels = {"service": supervisor.service, "task": task}
    return REGISTRY.get_sample_value("background_task_failures_total", labels) or 0.0


def running(supervisor: Supervisor) -> float | None:
    return REGISTRY.get_sample_value("background_tasks_running", {"service": supervisor.service})


async def test_a_failing_task_is_logged_and_counted(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    async def breaks() -> None:
        await asyncio.sleep(0)
        raise ValueError("disk full")

    with caplog.at_level(logging.ERROR, logger="asynccore.tasks"):
        supervisor.spawn(breaks(), name="writer")
        await wait_until(lambda: failures(supervisor, "writer") == 1, timeout=5)
    record = next(r for r in caplog.records if r.message == "background task failed")
    # Why the ignore below: the log record's extra fields are attributes logging does not declare.
    assert record.task == "writer"  # type: ignore[attr-defined]
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
    assert len(supervisor) == 0
    assert running(supervisor) == 0
    await supervisor.close(1)


async def test_the_supervisor_holds_the_only_reference(supervisor: Supervisor) -> None:
    done = asyncio.Event()

    async def job() -> None:
        await asyncio.sleep(0.05)
        done.set()

    supervisor.spawn(job(), name="orphan")  # the caller drops the task on purpose
    assert len(supervisor) == 1
    assert running(supervisor) == 1
    await asyncio.wait_for(done.wait(), timeout=5)
    await wait_until(lambda: len(supervisor) == 0, timeout=5)
    await supervisor.close(1)


async def test_a_periodic_job_survives_its_failures(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs % 2:
            raise ConnectionError("broker away")

    with caplog.at_level(logging.ERROR, logger="asynccore.tasks"):
        supervisor.every(0.01, flaky, name="relay")
        await wait_until(lambda: runs >= 5, timeout=5)
    await supervisor.close(1)
    assert failures(supervisor, "relay") == (runs + 1) // 2
    assert sum(r.message == "periodic task failed" for r in caplog.records) == (runs + 1) // 2


async def test_close_lets_running_tasks_finish(supervisor: Supervisor) -> None:
    async def flush() -> str:
        await asyncio.sleep(0.2)
        return "flushed"

    task = supervisor.spawn(flush(), name="flush")
    await supervisor.close(5)
    assert task.done() and not task.cancelled()
    assert task.result() == "flushed"


async def test_close_cancels_what_outlives_the_drain_timeout(
    supervisor: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    cleaned_up = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    task = supervisor.spawn(forever(), name="forever")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="asynccore.tasks"):
        await supervisor.close(0.2)
    assert 0.2 <= time.monotonic() - started < 2
    assert task.cancelled()
    assert cleaned_up.is_set()
    assert "cancelled 1 background tasks at shutdown" in caplog.messages
    assert failures(supervisor, "forever") == 0  # a cancellation at shutdown is not a failure


async def test_close_does_not_wait_out_an_idle_periodic_job(supervisor: Supervisor) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        ticks += 1

    supervisor.every(60, tick, name="hourly-ish")
    await wait_until(lambda: ticks == 1, timeout=5)
    started = time.monotonic()
    await supervisor.close(10)
    assert time.monotonic() - started < 1
    assert len(supervisor) == 0


async def test_close_lets_a_periodic_run_in_progress_finish(supervisor: Supervisor) -> None:
    finished = 0
    entered = asyncio.Event()

    async def slow_run() -> None:
        nonlocal finished
        entered.set()
        await asyncio.sleep(0.2)
        finished += 1

    supervisor.every(0.01, slow_run, name="slow-run")
    await asyncio.wait_for(entered.wait(), timeout=5)
    await supervisor.close(5)
    assert finished >= 1
    assert len(supervisor) == 0


async def test_no_new_tasks_after_close(supervisor: Supervisor) -> None:
    await supervisor.close(1)

    async def late() -> None:
        raise AssertionError("must never run")

    coro = late()
    with pytest.raises(RuntimeError, match="shutting down"):
        supervisor.spawn(coro, name="late")
    assert (
        inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    )  # closed, so no "never awaited" warning either


async def test_a_loop_stops_even_when_wait_for_loses_its_cancel() -> None:
    turns = 0

    async def step() -> None:
        # The cancel lands in the step that finishes the wrapped call: Python 3.11's wait_for then
        # returns normally (CPython gh-86296); 3.12 raises. Either way the loop must stop.
        looping.cancel()

    async def loop() -> None:
        nonlocal turns
        while True:
            check_cancelled()
            turns += 1
            await asyncio.wait_for(step(), timeout=5)

    looping = asyncio.create_task(loop())
    await asyncio.wait([looping], timeout=5)
    assert looping.cancelled()
    assert turns == 1


async def test_cancel_and_wait_leaves_a_task_that_does_not_stop(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def stuck_clean_up() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()

    task = asyncio.create_task(stuck_clean_up(), name="stuck")
    await asyncio.sleep(0)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="asynccore.tasks"):
        await cancel_and_wait([task], 0.2)
    assert 0.2 <= time.monotonic() - started < 2
    assert not task.done()
    assert "tasks still running 0.2s after cancel, left behind: stuck" in caplog.messages
    release.set()
    await asyncio.wait([task], timeout=5)
    assert task.cancelled()
