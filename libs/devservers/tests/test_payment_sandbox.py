"""The payment sandbox's refunds: "cancel or refund" by the charge's key, never twice (issue 16, item 2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from conftest import Sandbox

from asynccore.testing import wait_until


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def _post(
    http: aiohttp.ClientSession, url: str, key: str | None, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    headers = {"Idempotency-Key": key} if key else {}
    async with http.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_a_charge_is_refunded_in_full_once(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    charge = {"order_id": 1, "amount_cents": 700}
    assert (await _post(http, f"{sandbox.url}/charges", "order-1", charge))[0] == 201
    status, refund = await _post(http, f"{sandbox.url}/refunds", "refund-order-1", {"charge_key": "order-1"})
    assert status == 201 and refund["status"] == "refunded" and refund["amount_cents"] == 700
    assert await _post(http, f"{sandbox.url}/refunds", "refund-order-1", {"charge_key": "order-1"}) == (
        200,
        refund,
    )
    status, body = await _post(http, f"{sandbox.url}/refunds", "another-key", {"charge_key": "order-1"})
    assert status == 409 and "charge_key" in body["errors"]
    async with http.get(f"{sandbox.url}/charges/order-1") as resp:
        assert (await resp.json())["refunded_cents"] == 700
    stats = sandbox.state.stats()
    assert (stats["refunded"], stats["refund_replays"], stats["double_refunds"]) == (1, 1, 1)


async def test_a_refund_before_any_charge_voids_the_key(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    status, void = await _post(http, f"{sandbox.url}/refunds", "refund-order-2", {"charge_key": "order-2"})
    assert status == 201 and void["status"] == "voided" and void["amount_cents"] == 0
    status, body = await _post(http, f"{sandbox.url}/charges", "order-2", {"order_id": 2, "amount_cents": 5})
    assert status == 409 and "Idempotency-Key" in body["errors"]
    assert sandbox.state.charges == {} and sandbox.state.voids == 1


async def test_a_refund_waits_for_the_charge_in_flight_and_refunds_it(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    sandbox.state.latency_ms = 300
    charging = asyncio.create_task(
        _post(http, f"{sandbox.url}/charges", "order-3", {"order_id": 3, "amount_cents": 900})
    )
    await wait_until(lambda: sandbox.state.in_flight("order-3"), timeout=5)
    status, refund = await _post(http, f"{sandbox.url}/refunds", "refund-order-3", {"charge_key": "order-3"})
    assert (await charging)[0] == 201
    assert status == 201 and refund["status"] == "refunded" and refund["amount_cents"] == 900


async def test_refunds_need_a_key_and_share_the_failure_knob(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    assert (await _post(http, f"{sandbox.url}/refunds", None, {"charge_key": "order-4"}))[0] == 400
    sandbox.state.failure_rate = 1.0
    assert (await _post(http, f"{sandbox.url}/refunds", "refund-order-4", {"charge_key": "order-4"}))[
        0
    ] == 503
    assert sandbox.state.voids == 0  # a failure has no effect
