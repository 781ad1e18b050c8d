"""Supervised background tasks: never a bare fire-and-forget ``create_task``.

A :class:`Supervisor` owns every task it starts: it keeps a strong reference (so the loop cannot
garbage-collect it mid-flight), logs and counts each failure (exceptions never vanish), restarts
periodic jobs, and on shutdown first lets tasks drain for a bounded time, then cancels the rest.

:func:`cancel_and_wait` is that last step for any owner of tasks; :func:`check_cancelled` is for loops
that run until cancelled, so that a cancel a library lost still stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine
from typing import Any

from prometheus_client import Counter, Gauge

__all__ = ["Supervisor", "cancel_and_wait", "check_cancelled"]

log = logging.getLogger("asynccore.tasks")

TASKS_RUNNING = Gauge("background_tasks_running", "Supervised background tasks alive", ["service"])
TASK_FAILURES = Counter("background_task_failures_total", "Supervised tasks that raised", ["service", "task"])


def check_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop and is still running.

    On Python 3.11 ``asyncio.wait_for`` returns normally when the cancel lands just as the call it
    wraps finishes (CPython gh-86296, fixed in 3.12), and redis-py sends every command through
    ``wait_for`` once a socket timeout is set: the task carries on as if never cancelled, and an owner
    awaiting it waits forever. ``Task.cancelling()`` still counts the lost request, so a loop that
    calls this on every turn stops one turn late instead of never.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(tasks: Collection[asyncio.Task[Any]], timeout_s: float) -> None:
    """Cancel ``tasks`` and wait up to ``timeout_s`` for them to end; log, and leave, any still running.

    Bounded because a task can outlive its cancel (a lost cancel, see :func:`check_cancelled`, or a
    clean-up stuck on the network): its owner's shutdown must not hang with it.
    """
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, still_running = await asyncio.wait(pending, timeout=timeout_s)
    if still_running:
        names = sorted(task.get_name() for task in still_running)
        log.error("tasks still running %gs after cancel, left behind: %s", timeout_s, ", ".join(names))


class Supervisor:
    def __init__(self, service: str) -> None:
        self.service = service
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._stopping = asyncio.Event()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a tracked task; a failure is logged and counted, never swallowed silently."""
        if self._closing:
            coro.close()
            raise RuntimeError(f"supervisor is shutting down; refusing task {name!r}")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        TASK_FAILURES.labels(self.service, name)  # the series exists at 0 before any failure
        TASKS_RUNNING.labels(self.service).inc()
        task.add_done_callback(self._on_done)
        return task

    def every(
        self, interval_s: float, job: Callable[[], Awaitable[object]], *, name: str
    ) -> asyncio.Task[Any]:
        """Run ``job`` every ``interval_s`` seconds until shutdown; one failing run does not stop the next.

        At shutdown a run in progress may finish (it drains like any task); the pause between runs ends
        at once, so an idle periodic job never holds shutdown up for the whole drain timeout.
        """

        async def loop() -> None:
            while not self._stopping.is_set():
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    TASK_FAILURES.labels(self.service, name).inc()
                    log.exception("periodic task failed", extra={"task": name})
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval_s):
                        await self._stopping.wait()

        return self.spawn(loop(), name=name)

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        TASKS_RUNNING.labels(self.service).dec()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            TASK_FAILURES.labels(self.service, task.get_name()).inc()
            log.error("background task failed", exc_info=exc, extra={"task": task.get_name()})

    async def close(self, drain_timeout_s: float) -> None:
        """Refuse new tasks, wait up to ``drain_timeout_s`` for running ones, cancel what is left."""
        self._closing = True
        self._stopping.set()
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, still_running = await asyncio.wait(pending, timeout=drain_timeout_s)
        if still_running:
            log.warning("cancelled %d background tasks at shutdown", len(still_running))
            await cancel_and_wait(still_running, drain_timeout_s)
