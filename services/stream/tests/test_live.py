"""``GET /api/live`` holds a connection (and a task) per listener for as long as it stays: the service
caps open streams per client address and in all, whatever the proxy in front of it does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import REGISTRY
from stream_testkit import Topics, serve, settings_for

from asynccore.testing import wait_until
from devservers.kafka_broker import KafkaBroker


@pytest.fixture
async def capped(kafka: KafkaBroker, topics: Topics, prefix: str) -> AsyncIterator[aiohttp.ClientSession]:
    """At most 1 stream per client, 3 in all; loopback (this test) is a trusted proxy by default."""
    settings = settings_for(
        kafka, topics, prefix, stream_consume=False, stream_live_max=3, stream_live_max_per_client=1
    )
    async with serve(settings) as session:
        yield session


def refused(limit: str) -> float:
    return REGISTRY.get_sample_value("stream_live_refused_total", {"limit": limit}) or 0.0


async def test_live_streams_are_capped_per_client_and_in_all(capped: aiohttp.ClientSession) -> None:
    api = capped
    before = refused("per_client"), refused("total")
    async with contextlib.AsyncExitStack() as streams:

        async def open_stream(**headers: str) -> aiohttp.ClientResponse:
            resp = await streams.enter_async_context(api.get("/api/live", headers=headers))
            if resp.status != 200:
                assert resp.headers["Retry-After"]
                assert list((await resp.json())["errors"]) == ["request"]
            return resp

        first = await open_stream()
        # The peer (loopback) has one open: a second is refused.
        assert (await open_stream()).status == 503
        # Behind the trusted proxy, another client (the address nginx forwards) has its own allowance.
        assert (await open_stream(**{"X-Real-IP": "203.0.113.7"})).status == 200
        # X-Forwarded-For: the client is the entry the proxy added (the last), not what the client sent.
        assert (await open_stream(**{"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})).status == 503
        assert (await open_stream(**{"X-Forwarded-For": "203.0.113.7, 203.0.113.8"})).status == 200
        # Three open in all: a fourth is refused, whoever asks.
        assert (await open_stream(**{"X-Real-IP": "203.0.113.9"})).status == 503
        assert (refused("per_client"), refused("total")) == (before[0] + 2, before[1] + 1)

        # A stream that ends gives its place back (the service notices at its next frame).
        first.close()

        async def admitted() -> bool:
            return (await open_stream(**{"X-Real-IP": "203.0.113.9"})).status == 200

        await wait_until(admitted, timeout=10, message="a closed stream's place is given back")


async def test_forwarded_addresses_count_only_from_a_trusted_proxy(
    kafka: KafkaBroker, topics: Topics, prefix: str
) -> None:
    settings = settings_for(
        kafka, topics, prefix, stream_consume=False, stream_live_max_per_client=2, stream_trusted_proxies=""
    )
    async with serve(settings) as api, contextlib.AsyncExitStack() as streams:
        got = []
        for i in range(3):  # a client that names itself differently each time is still one client
            headers = {"X-Real-IP": f"203.0.113.{i}", "X-Forwarded-For": f"198.51.100.{i}"}
            resp = await streams.enter_async_context(api.get("/api/live", headers=headers))
            got.append(resp.status)
        assert got == [200, 200, 503]


async def test_open_streams_are_a_gauge(capped: aiohttp.ClientSession) -> None:
    async with capped.get("/api/live") as resp:
        assert resp.status == 200
        assert (REGISTRY.get_sample_value("stream_live_streams") or 0) >= 1

    def none_open() -> bool:
        return REGISTRY.get_sample_value("stream_live_streams") == 0

    await wait_until(none_open, timeout=10, message="the closed stream is no longer counted")
