"""The Redis pool against real Redis: readiness through outages, bounded waits, pool gauges."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from aiohttp import web
from prometheus_client import REGISTRY, generate_latest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from asynccore.app import add_routes
from asynccore.pools.redis import open_redis, redis_pool
from asynccore.testing import RedisServer, TcpProxy, metric_value, wait_until

if TYPE_CHECKING:
    from conftest import PoolGauge, Serve

REDIS = web.AppKey("redis", Redis)


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A cuttable path to the shared Redis."""
    proxy = TcpProxy("127.0.0.1", 6379)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_client_talks_to_redis(redis_url: str, redis_prefix: str) -> None:
    client = open_redis(redis_url)
    try:
        await client.set(f"{redis_prefix}k", b"v", ex=60)
        assert await client.get(f"{redis_prefix}k") == b"v"
    finally:
        await client.aclose()


async def test_readyz_follows_a_cut_and_a_restore(proxy: TcpProxy, service: str, serve: Serve) -> None:
    url = f"redis://127.0.0.1:{proxy.port}/0"
    async with serve(service, redis_pool(REDIS, url, timeout_s=0.5)) as (app, client):
        assert (await client.get("/readyz")).status == 200
        assert await app[REDIS].ping()

        await proxy.cut()
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert "redis" in (await resp.json())["failing"]

        await proxy.restore()

        async def ready() -> bool:
            return (await client.get("/readyz")).status == 200

        await wait_until(ready, timeout=5, message="ready again after restore")


async def test_a_request_that_finds_redis_cut_is_a_503_naming_the_pool(
    proxy: TcpProxy, service: str, serve: Serve
) -> None:
    url = f"redis://127.0.0.1:{proxy.port}/0"

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"n": await request.app[REDIS].incr(f"{service}:n")})

    def setup(app: web.Application) -> None:
        add_routes(app, [web.get("/count", count)])

    async with serve(service, redis_pool(REDIS, url, name="cache", timeout_s=0.5), setup=setup) as (
        app,
        client,
    ):
        assert (await client.get("/count")).status == 200
        await proxy.cut()
        resp = await client.get("/count")
        assert resp.status == 503
        assert list((await resp.json())["errors"]) == ["cache"]
        assert resp.headers["Retry-After"] == "1"
        await proxy.restore()
        assert (await client.get("/count")).status == 200
        await app[REDIS].delete(f"{service}:n")


async def test_readyz_names_the_pool_when_its_server_is_stopped(service: str, serve: Serve) -> None:
    server = RedisServer()
    await server.start()
    try:
        async with serve(service, redis_pool(REDIS, server.url, name="cache", timeout_s=0.5)) as (_, client):
            assert (await client.get("/readyz")).status == 200
            await server.stop()
            started = time.monotonic()
            resp = await client.get("/readyz")
            assert resp.status == 503
            body = await resp.json()
            assert list(body["failing"]) == ["cache"]
            assert body["failing"]["cache"] == "unavailable"
            assert time.monotonic() - started < 2.0
    finally:
        await server.stop()


async def test_a_stopped_server_costs_a_caller_a_bounded_time() -> None:
    server = RedisServer()
    await server.start()
    client = open_redis(server.url, timeout_s=0.3)
    try:
        assert await client.ping()
        await server.stop()
        started = time.monotonic()
        with pytest.raises(RedisConnectionError):
            await client.get("k")
        assert time.monotonic() - started < 1.0
    finally:
        await client.aclose()
        await server.stop()


async def test_exhausted_pool_makes_callers_wait_at_most_timeout_s(redis_url: str) -> None:
    client = open_redis(redis_url, max_connections=1, timeout_s=0.2)
    pool = client.connection_pool
    held = await pool.get_connection()
    try:
        started = time.monotonic()
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.ping()
        assert 0.15 < time.monotonic() - started < 1.0
    finally:
        await pool.release(held)
        await client.aclose()


async def test_gauges_show_size_in_use_and_waiting(
    redis_url: str, service: str, serve: Serve, pool_gauge: PoolGauge
) -> None:
    async with serve(service, redis_pool(REDIS, redis_url, max_connections=2, timeout_s=5)) as (app, client):
        pool = app[REDIS].connection_pool
        assert await pool_gauge(client, "size", service, "redis") == 2
        assert await pool_gauge(client, "in_use", service, "redis") == 0

        held = [await pool.get_connection(), await pool.get_connection()]
        assert await pool_gauge(client, "in_use", service, "redis") == 2

        async def ping() -> bool:
            return bool(await app[REDIS].ping())

        blocked = asyncio.create_task(ping())

        async def one_waiting() -> bool:
            return await pool_gauge(client, "waiting", service, "redis") == 1

        await wait_until(one_waiting, timeout=3)
        for conn in held:
            await pool.release(conn)
        assert await blocked
        assert await pool_gauge(client, "in_use", service, "redis") == 0
        assert await pool_gauge(client, "waiting", service, "redis") == 0

    # A closed pool no longer reports.
    assert metric_value(generate_latest(REGISTRY).decode(), "db_pool_size", service=service) is None
