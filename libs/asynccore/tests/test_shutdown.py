"""SIGTERM on a real service process: in-flight requests finish, background tasks drain, exit 0.

A supervisor or a terminal's Ctrl-C signals the whole process group, so a service often gets its
stop signal twice (``uv run`` forwards the one it got too): repeated signals must not cut the drain
short, and whatever happens the process is gone soon after the drain bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from asynccore.app import STOP_GRACE_S
from asynccore.testing import ServiceProcess, free_port, wait_until

APP = Path(__file__).parent / "apps" / "drain_service.py"
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=15)


async def start_service(shutdown_timeout_s: float, **settings: str) -> tuple[ServiceProcess, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"DRAIN_PORT": str(port), "SHUTDOWN_TIMEOUT_S": str(shutdown_timeout_s), **settings}
    service = ServiceProcess([sys.executable, str(APP)], env=env, health_url=f"{base}/healthz", name="drain")
    await service.start(timeout=20)
    return service, base


def signal_twice(service: ServiceProcess, first: signal.Signals, second: signal.Signals) -> float:
    """Two stop signals 1 ms apart, as a process group signalled by a supervisor gets them."""
    assert service.pid is not None
    sent_at = time.monotonic()
    os.kill(service.pid, first)
    time.sleep(0.001)
    os.kill(service.pid, second)
    return sent_at


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as session:
        yield session


def json_lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def test_sigterm_lets_in_flight_request_and_background_job_finish(
    session: aiohttp.ClientSession,
) -> None:
    service, base = await start_service(shutdown_timeout_s=5)
    try:
        async with session.post(f"{base}/jobs", params={"s": "1"}) as resp:
            assert resp.status == 202
        rid = f"drain-{uuid.uuid4().hex}"

        async def slow_request() -> tuple[int, dict[str, float]]:
            async with session.get(f"{base}/slow", params={"s": "1.5"}, headers={"X-Request-ID": rid}) as r:
                return r.status, await r.json()

        in_flight = asyncio.create_task(slow_request())
        await wait_until(lambda: "slow request started" in service.output, timeout=5)
        sent_at = time.monotonic()
        service.kill(signal.SIGTERM)

        status, body = await in_flight
        assert (status, body) == (200, {"slept_s": 1.5})
        assert await service.wait(timeout=8) == 0
        # The slow request (1.5 s) bounds the drain; the 1 s job ran alongside it.
        assert time.monotonic() - sent_at < 4.0
        messages = [line["message"] for line in json_lines(service.output)]
        assert "job finished" in messages
        assert "job cancelled" not in messages
        started = next(
            line for line in json_lines(service.output) if line["message"] == "slow request started"
        )
        assert started["request_id"] == rid
    finally:
        await service.stop()


async def test_sigterm_cancels_a_background_job_that_outlives_the_drain_timeout(
    session: aiohttp.ClientSession,
) -> None:
    service, base = await start_service(shutdown_timeout_s=1)
    try:
        async with session.post(f"{base}/jobs", params={"s": "60"}) as resp:
            assert resp.status == 202
        await wait_until(lambda: "job started" in service.output, timeout=5)
        sent_at = time.monotonic()
        service.kill(signal.SIGTERM)

        assert await service.wait(timeout=8) == 0
        assert time.monotonic() - sent_at < 3.5  # drain timeout 1 s, then cancel
        messages = [line["message"] for line in json_lines(service.output)]
        assert "job cancelled" in messages
        assert "job finished" not in messages
        assert "cancelled 1 background tasks at shutdown" in messages
    finally:
        await service.stop()


async def test_sigterm_stops_accepting_new_connections(session: aiohttp.ClientSession) -> None:
    service, base = await start_service(shutdown_timeout_s=5)
    try:
        in_flight = asyncio.create_task(session.get(f"{base}/slow", params={"s": "1.5"}))
        await wait_until(lambda: "slow request started" in service.output, timeout=5)
        service.kill(signal.SIGTERM)

        async def refused() -> bool:
            try:
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as fresh,
                    fresh.get(f"{base}/healthz"),
                ):
                    pass
            except aiohttp.ClientConnectionError:
                return True
            return False

        await wait_until(refused, timeout=2, message="new connections refused while draining")
        resp = await in_flight
        assert resp.status == 200
        resp.release()
        assert await service.wait(timeout=8) == 0
    finally:
        await service.stop()


SIGNAL_PAIRS = [
    (signal.SIGTERM, signal.SIGTERM),
    (signal.SIGINT, signal.SIGINT),
    (signal.SIGTERM, signal.SIGINT),
    (signal.SIGINT, signal.SIGTERM),
    (signal.SIGTERM, signal.SIGTERM),
]


@pytest.mark.parametrize(("first", "second"), SIGNAL_PAIRS)
async def test_a_second_signal_during_the_drain_lets_every_resource_close(
    first: signal.Signals, second: signal.Signals
) -> None:
    # Closing the resource takes 0.5 s, so the second signal lands while it closes; had the close
    # been cut short, its thread would keep the process alive (as aiosqlite's kept the blog's).
    service, _ = await start_service(shutdown_timeout_s=3, DRAIN_THREADED_RESOURCE="1", DRAIN_CLOSE_S="0.5")
    try:
        sent_at = signal_twice(service, first, second)
        assert await service.wait(timeout=6) == 0, service.output[-3000:]
        assert time.monotonic() - sent_at < 3.0
        messages = [line["message"] for line in json_lines(service.output)]
        assert "resource closed" in messages
    finally:
        await service.stop()


async def test_a_second_signal_does_not_cut_an_in_flight_request_short(
    session: aiohttp.ClientSession,
) -> None:
    service, base = await start_service(shutdown_timeout_s=5)
    try:

        async def slow_request() -> tuple[int, dict[str, float]]:
            async with session.get(f"{base}/slow", params={"s": "1"}) as r:
                return r.status, await r.json()

        in_flight = asyncio.create_task(slow_request())
        await wait_until(lambda: "slow request started" in service.output, timeout=5)
        signal_twice(service, signal.SIGTERM, signal.SIGTERM)
        service.kill(signal.SIGINT)

        assert await in_flight == (200, {"slept_s": 1.0})
        assert await service.wait(timeout=8) == 0, service.output[-3000:]
    finally:
        await service.stop()


async def test_a_signal_during_start_up_stops_it_and_closes_what_opened() -> None:
    port = free_port()
    env = {
        "DRAIN_PORT": str(port),
        "SHUTDOWN_TIMEOUT_S": "3",
        "DRAIN_THREADED_RESOURCE": "1",
        "DRAIN_OPEN_S": "30",
    }
    service = ServiceProcess([sys.executable, str(APP)], env=env, name="drain")
    await service.start()
    try:
        await wait_until(lambda: "resource opening" in service.output, timeout=15)
        sent_at = signal_twice(service, signal.SIGTERM, signal.SIGTERM)
        assert await service.wait(timeout=6) == 0, service.output[-3000:]
        assert time.monotonic() - sent_at < 3.0
        messages = [line["message"] for line in json_lines(service.output)]
        assert "resource open" not in messages
    finally:
        await service.stop()


async def test_a_close_that_never_ends_is_cut_off_after_the_drain_bound() -> None:
    service, _ = await start_service(shutdown_timeout_s=1, DRAIN_THREADED_RESOURCE="1", DRAIN_CLOSE_HANGS="1")
    try:
        sent_at = signal_twice(service, signal.SIGTERM, signal.SIGINT)
        # The drain bound (1 s) plus the grace for closing resources, then the process is ended.
        assert await service.wait(timeout=10) == 1, service.output[-3000:]
        assert time.monotonic() - sent_at < 1 + STOP_GRACE_S + 1.0
        assert "resource closing" in [line["message"] for line in json_lines(service.output)]
        assert "exiting anyway" in service.output
    finally:
        await service.stop()
