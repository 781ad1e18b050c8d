"""Two replicas behind nginx: one dies mid-load and clients of idempotent GETs never notice."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest
from conftest import Stack, answers

from asynccore.testing import wait_until

pytestmark = pytest.mark.stack

CLIENTS = 8


@pytest.mark.parametrize(
    ("port_var", "paths"),
    [
        pytest.param("BLOG_PORT", ("/api/tags", "/api/articles", "/"), id="blog"),
        pytest.param("ORDERS_PORT", ("/api/products",), id="orders"),
    ],
)
async def test_killing_a_replica_mid_load_loses_no_get(
    stack: Stack, port_var: str, paths: tuple[str, ...]
) -> None:
    victim_port = stack.port(port_var)
    served = 0
    failures: list[str] = []
    stop = asyncio.Event()

    async def client(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal served
        while not stop.is_set():
            path = paths[n % len(paths)]
            n += 1
            try:
                async with session.get(stack.front + path) as resp:
                    await resp.read()
                    if resp.status != 200:
                        failures.append(f"GET {path}: {resp.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append(f"GET {path}: {type(exc).__name__}: {exc}")
            served += 1

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [asyncio.create_task(client(session, n)) for n in range(CLIENTS)]
        try:
            await wait_until(lambda: served >= 200, timeout=30, message="load is flowing")
            logged_before_kill = len(stack.access_log())
            os.kill(stack.listener_pid(victim_port), signal.SIGKILL)
            killed_at = served
            # Keep loading while the replica is gone: nginx must route around it.
            await wait_until(lambda: served >= killed_at + 400, timeout=30, message="load after the kill")
        finally:
            stop.set()
            await asyncio.gather(*clients)

    assert failures == [], failures[:10]
    # The kill was felt: nginx tried the dead replica and retried those requests on its twin.
    victim = f"127.0.0.1:{victim_port}"
    after_kill = stack.access_log()[logged_before_kill:]
    retried = [e for e in after_kill if str(e["upstream_addr"]).startswith(f"{victim}, ")]
    assert retried, f"no request was retried away from {victim}"
    # And the supervisor brings the replica back, so the stack heals.
    await wait_until(lambda: answers(victim_port), timeout=30, message="the killed replica is back")
