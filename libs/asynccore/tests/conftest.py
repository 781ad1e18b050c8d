"""Shared fixtures: each test gets its own MySQL database, Redis key prefix and service name."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from asynccore.app import CleanupCtx, create_app
from asynccore.pools.mysql import drop_database
from asynccore.settings import ServiceSettings
from asynccore.testing import metric_value, server_url

MYSQL_SERVER = server_url("MYSQL")
REDIS_URL = server_url("REDIS") + "/0"

# Services refuse to start without a JWT secret (no default in code): these tests sign with their own.
os.environ.setdefault("JWT_SECRET", secrets.token_urlsafe(32))


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix owned by this test; its keys are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex}:"
    yield prefix
    client = Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def mysql_url() -> AsyncIterator[str]:
    """The URL of a database owned by this test (not created yet); dropped afterwards."""
    url = f"{MYSQL_SERVER}/t_{uuid.uuid4().hex[:16]}"
    yield url
    await drop_database(url)


@pytest.fixture
def service() -> str:
    """A service name unique to this test, so its metric labels are its own."""
    return f"t-{uuid.uuid4().hex[:10]}"


Client = TestClient[web.Request, web.Application]
Serve = Callable[..., AbstractAsyncContextManager[tuple[web.Application, Client]]]
PoolGauge = Callable[[Client, str, str, str], Awaitable[float | None]]


@asynccontextmanager
async def _serve(
    service: str, *resources: CleanupCtx, setup: Callable[[web.Application], None] | None = None
) -> AsyncIterator[tuple[web.Application, Client]]:
    app = create_app(service, ServiceSettings(), resources=resources)
    if setup is not None:
        setup(app)  # routes and keys, before the app is frozen by starting
    async with TestClient(TestServer(app)) as client:
        yield app, client


async def _pool_gauge(client: Client, gauge: str, service: str, pool: str) -> float | None:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return metric_value(await resp.text(), f"db_pool_{gauge}", service=service, pool=pool)


@pytest.fixture
def serve() -> Serve:
    """``async with serve(service, *resources, setup=fn) as (app, client)``: a real app on a loopback port."""
    return _serve


@pytest.fixture
def pool_gauge() -> PoolGauge:
    """``await pool_gauge(client, "in_use", service, pool)``: the gauge as ``/metrics`` shows it now."""
    return _pool_gauge
