"""Retry backs off and gives up; the circuit breaker opens, half-opens for one trial, and closes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from asynccore.app import add_routes, create_app
from asynccore.errors import ApiError
from asynccore.resilience import CircuitBreaker, CircuitOpen, retrying
from asynccore.settings import ServiceSettings
from asynccore.testing import free_port, wait_until


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def state(breaker: CircuitBreaker) -> str:
    """Read afresh each time: the state moves with the clock, not only with calls."""
    return breaker.state


def value(metric: str, name: str) -> float | None:
    return REGISTRY.get_sample_value(metric, {"name": name})


async def connect(port: int) -> None:
    """A real dependency call: open and close a TCP connection."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[int]:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_retry_backs_off_then_gives_up_with_the_original_error() -> None:
    name = unique("retry")
    dead_port = free_port()
    attempts_at: list[float] = []

    with pytest.raises(ConnectionRefusedError):
        async for attempt in retrying(attempts=4, initial_s=0.05, max_s=1.0, name=name):
            with attempt:
                attempts_at.append(time.monotonic())
                await connect(dead_port)

    assert len(attempts_at) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    # 0.05·2ⁿ plus up to 0.05 of jitter: each wait at least doubles the base.
    for gap, base in zip(gaps, (0.05, 0.1, 0.2), strict=True):
        assert base <= gap < base + 0.05 + 0.5
    assert value("retry_attempts_total", name) == 3


async def test_retry_caps_the_wait_at_max_s() -> None:
    attempts_at: list[float] = []
    with pytest.raises(ConnectionRefusedError):
        async for attempt in retrying(attempts=5, initial_s=0.04, max_s=0.06, name=unique("cap")):
            with attempt:
                attempts_at.append(time.monotonic())
                raise ConnectionRefusedError
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    assert all(gap < 0.06 + 0.5 for gap in gaps)
    assert gaps[-1] >= 0.06


async def test_retry_succeeds_once_the_dependency_is_back() -> None:
    name = unique("retry")
    port = free_port()
    server: asyncio.Server | None = None
    tries = 0
    try:
        async for attempt in retrying(attempts=5, initial_s=0.01, name=name):
            with attempt:
                tries += 1
                if tries == 3:  # the dependency comes up while we back off
                    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
                await connect(port)
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
    assert tries == 3
    assert value("retry_attempts_total", name) == 2


async def test_retry_leaves_other_errors_alone() -> None:
    name = unique("retry")
    tries = 0
    with pytest.raises(ValueError):
        async for attempt in retrying(retry_on=ConnectionError, name=name):
            with attempt:
                tries += 1
                raise ValueError("a bug, not a blip")
    assert tries == 1
    assert value("retry_attempts_total", name) in (None, 0)


async def test_retrying_also_calls_a_function() -> None:
    calls = 0

    async def flaky(x: int) -> int:
        nonlocal calls
        calls += 1
        if calls < 2:
            raise ConnectionResetError
        return x * 2

    assert await retrying(initial_s=0.01, name=unique("call"))(flaky, 21) == 42


async def test_breaker_opens_after_consecutive_failures_and_fails_fast(listener: int) -> None:
    name = unique("cb")
    dead_port = free_port()
    breaker = CircuitBreaker(name, failure_threshold=3, reset_after_s=30)
    assert value("circuit_breaker_state", name) == 0

    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            await breaker.call(connect, dead_port)
    assert breaker.is_open
    assert value("circuit_breaker_state", name) == 1
    assert value("circuit_breaker_opens_total", name) == 1

    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1
        await connect(listener)

    started = time.monotonic()
    with pytest.raises(CircuitOpen) as raised:
        await breaker.call(counted)
    assert time.monotonic() - started < 0.05
    assert calls == 0  # the dependency was not touched
    assert raised.value.status == 503
    # Why the ignore below: the exception's headers are typed as an optional mapping.
    assert 29 <= int(raised.value.headers["Retry-After"]) <= 30  # type: ignore[index]


async def test_success_resets_the_consecutive_failure_count(listener: int) -> None:
    breaker = CircuitBreaker(unique("cb"), failure_threshold=3, reset_after_s=30)
    dead_port = free_port()
    for port in (dead_port, dead_port, listener, dead_port, dead_port):
        with contextlib.suppress(ConnectionRefusedError):
            await breaker.call(connect, port)
    assert state(breaker) == "closed"


async def test_half_open_lets_one_trial_through_and_its_success_closes(listener: int) -> None:
    name = unique("cb")
    breaker = CircuitBreaker(name, failure_threshold=1, reset_after_s=0.2)
    with pytest.raises(ConnectionRefusedError):
        await breaker.call(connect, free_port())
    assert state(breaker) == "open"
    await wait_until(lambda: state(breaker) == "half_open", timeout=5)
    assert value("circuit_breaker_state", name) == 2

    entered, proceed = asyncio.Event(), asyncio.Event()

    async def trial() -> None:
        entered.set()
        await proceed.wait()
        await connect(listener)

    trial_call = asyncio.create_task(breaker.call(trial))
    await asyncio.wait_for(entered.wait(), timeout=5)
    with pytest.raises(CircuitOpen):  # only one trial at a time
        await breaker.call(connect, listener)
    proceed.set()
    await trial_call
    assert state(breaker) == "closed"
    assert value("circuit_breaker_state", name) == 0
    await breaker.call(connect, listener)  # traffic flows again


async def test_a_failed_trial_opens_the_circuit_again() -> None:
    name = unique("cb")
    dead_port = free_port()
    breaker = CircuitBreaker(name, failure_threshold=1, reset_after_s=0.2)
    with pytest.raises(ConnectionRefusedError):
        await breaker.call(connect, dead_port)
    await wait_until(lambda: state(breaker) == "half_open", timeout=5)
    with pytest.raises(ConnectionRefusedError):
        await breaker.call(connect, dead_port)
    assert state(breaker) == "open"
    assert value("circuit_breaker_opens_total", name) == 2


async def test_a_cancelled_trial_lets_the_next_caller_try(listener: int) -> None:
    breaker = CircuitBreaker(unique("cb"), failure_threshold=1, reset_after_s=0.2)
    with pytest.raises(ConnectionRefusedError):
        await breaker.call(connect, free_port())
    await wait_until(lambda: state(breaker) == "half_open", timeout=5)
    entered = asyncio.Event()

    async def hangs() -> None:
        entered.set()
        await asyncio.Event().wait()

    stuck = asyncio.create_task(breaker.call(hangs))
    await asyncio.wait_for(entered.wait(), timeout=5)
    stuck.cancel()
    await asyncio.gather(stuck, return_exceptions=True)
    assert state(breaker) == "half_open"
    await breaker.call(connect, listener)
    assert state(breaker) == "closed"


async def test_errors_outside_failure_on_are_answers_not_failures() -> None:
    breaker = CircuitBreaker(unique("cb"), failure_threshold=1, reset_after_s=30, failure_on=OSError)
    for _ in range(3):
        with pytest.raises(ApiError):
            async with breaker:
                raise ApiError(404, "article", "not found")  # the dependency answered
    assert state(breaker) == "closed"


async def test_circuit_open_in_a_handler_is_a_503_with_retry_after() -> None:
    breaker = CircuitBreaker(unique("cb"), failure_threshold=1, reset_after_s=30)

    async def pay(request: web.Request) -> web.Response:
        await breaker.call(connect, free_port())
        return web.json_response({"paid": True})

    app = create_app(unique("test"), ServiceSettings())
    add_routes(app, [web.post("/pay", pay)])
    async with TestClient(TestServer(app)) as client:
        first = await client.post("/pay")
        assert first.status == 500  # the refused connection itself
        second = await client.post("/pay")
        assert second.status == 503
        assert second.headers["Retry-After"] == "30"
        assert await second.json() == {"errors": {"server": [f"{breaker.name} unavailable"]}}
