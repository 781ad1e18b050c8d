"""SIGTERM on a real service process: in-flight requests finish, background tasks drain, exit 0."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from asynccore.testing import ServiceProcess, free_port, wait_until

APP = Path(__file__).parent / "apps" / "drain_service.py"
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=15)


async def start_service(shutdown_timeout_s: float) -> tuple[ServiceProcess, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"DRAIN_PORT": str(port), "SHUTDOWN_TIMEOUT_S": str(shutdown_timeout_s)}
    service = ServiceProcess([sys.executable, str(APP)], env=env, health_url=f"{base}/healthz", name="drain")
    await service.start(timeout=20)
    return service, base


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
