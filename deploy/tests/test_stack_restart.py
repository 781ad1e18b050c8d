"""`make run` stopped and started again: the stream carries on from where it was, and says so truthfully.

The broker keeps its data in the run dir, so after a restart the offsets stored with the aggregates
match the log again. Before, the second start met a new empty log: analytics froze for as long as the
first run had lasted, events POSTed meanwhile were answered 202 and never counted, and the gauges said
lag 0 and freshness 0.0 s.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from conftest import PrivateRedis, Stack, stack_env, start_stack, stop_stack

from asynccore.testing import metric_value, wait_until

pytestmark = pytest.mark.stack

TIMEOUT = aiohttp.ClientTimeout(total=5)
VISIBLE_WITHIN_S = 30.0
QUIET_AFTER_START_S = 10.0  # the scenario: an event POSTed this long after the second start


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    yield redis
    redis.stop()


def page_views(n: int, ts_ms: int) -> dict[str, object]:
    run = uuid.uuid4().hex[:8]
    return {
        "events": [
            {
                "event_id": f"{run}-{i}",
                "type": "page_view",
                "user_id": f"u{i}",
                "product_id": "p1",
                "ts": ts_ms,
            }
            for i in range(n)
        ]
    }


async def post(session: aiohttp.ClientSession, stack: Stack, body: dict[str, object]) -> None:
    # A trusted producer's credential: the stack's ingest token from its run dir.
    auth = {"Authorization": f"Bearer {stack.secret('STREAM_INGEST_TOKEN')}"}
    async with session.post(f"{stack.front}/api/events", json=body, headers=auth) as resp:
        assert resp.status == 202, await resp.text()


async def views_counted(session: aiohttp.ClientSession, stack: Stack) -> int:
    async with session.get(f"{stack.front}/api/analytics/summary") as resp:
        assert resp.status == 200, await resp.text()
        counts = (await resp.json())["counts"]
        return int(counts["page_view"])


async def gauges(session: aiohttp.ClientSession, stack: Stack) -> list[tuple[float | None, float]]:
    """(freshness, total lag) of each stream replica, as its /metrics says now."""
    seen = []
    for var in ("STREAM_PORT", "STREAM_PORT_2"):
        async with session.get(f"http://127.0.0.1:{stack.port(var)}/metrics") as resp:
            text = await resp.text()
        freshness = metric_value(text, "stream_freshness_seconds")
        lags = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("stream_consumer_lag{")
        ]
        seen.append((freshness, sum(lags)))
    return seen


def assert_truthful(seen: list[tuple[float | None, float]], newest_ts_ms: int, pending: int) -> None:
    """Freshness is never younger than the newest event we sent, and lag never hides unsent-to-state work."""
    age_s = time.time() - newest_ts_ms / 1000
    for freshness, _ in seen:
        if freshness is not None and not math.isnan(freshness):
            # 2 s of slack: the gauge is computed at scrape time, our clock read a moment later.
            assert freshness >= age_s - 2, (
                f"freshness {freshness:.1f}s but the newest event is {age_s:.1f}s old"
            )
    if pending == 0:
        assert all(lag == 0 for _, lag in seen), f"lag {seen} with nothing left to process"


async def test_a_restarted_stack_counts_what_arrives_after_it(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    env = stack_env(
        tmp_path, ASYNCSTACK_SERVICES="stream", REDIS_URL=private_redis.url, STREAM_LOADGEN_RATE="0"
    )
    first_ts = int(time.time() * 1000)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        stack = await asyncio.to_thread(start_stack, tmp_path, env)
        try:
            await post(session, stack, page_views(20, first_ts))
            await wait_until(
                lambda: counted_is(session, stack, 20), timeout=VISIBLE_WITHIN_S, message="20 views"
            )
        finally:
            left = await asyncio.to_thread(stop_stack, stack, signal.SIGINT)
        assert left == [], f"left running after Ctrl-C: {left}"

        stack = await asyncio.to_thread(start_stack, tmp_path, env)
        try:
            started = time.monotonic()
            # Quiet period: nothing new arrives; every look at the gauges must be true.
            while time.monotonic() - started < QUIET_AFTER_START_S:
                assert await views_counted(session, stack) == 20
                assert_truthful(await gauges(session, stack), first_ts, pending=0)
                await asyncio.sleep(0.5)

            second_ts = int(time.time() * 1000)
            await post(session, stack, page_views(5, second_ts))
            await wait_until(
                lambda: counted_is(session, stack, 25),
                timeout=VISIBLE_WITHIN_S,
                message="the events POSTed after the restart are counted",
            )
            await wait_until(
                lambda: _lag_zero(session, stack), timeout=VISIBLE_WITHIN_S, message="lag back to 0"
            )
            assert_truthful(await gauges(session, stack), second_ts, pending=0)
        finally:
            left = await asyncio.to_thread(stop_stack, stack, signal.SIGINT)
        assert left == [], f"left running after Ctrl-C: {left}"


async def counted_is(session: aiohttp.ClientSession, stack: Stack, expected: int) -> bool:
    return await views_counted(session, stack) == expected


async def _lag_zero(session: aiohttp.ClientSession, stack: Stack) -> bool:
    return all(lag == 0 for _, lag in await gauges(session, stack))
