"""Fixtures: a database per test on each backend (a SQLite file; a MariaDB database on the shared
server, dropped afterwards), the shared Redis under a key prefix per test, real apps.

Every test that touches the database (``database_url``, ``db``, ``settings``, ``client`` …) runs
once per backend: ids ``[sqlite]`` and ``[mariadb]``."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from blog_testing import REDIS_URL, Client, MakeCache, MakeClient, blog_settings, delete_prefix
from redis.asyncio import Redis

from asynccore.pools.mysql import drop_database
from asynccore.pools.redis import open_redis
from asynccore.testing import RedisServer, server_url, wait_until
from blog.app import build_app
from blog.cache import Cache
from blog.db import Database
from blog.passwords import Passwords
from blog.resources import CACHE
from blog.settings import BlogSettings
from blog.storage import migrate, open_database

# Services refuse to start without a JWT secret (no default in code): these tests sign with their own.
os.environ.setdefault("JWT_SECRET", secrets.token_urlsafe(32))


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A Redis key prefix owned by this test; its keys are deleted afterwards."""
    name = f"blogtest-{uuid.uuid4().hex[:12]}"
    yield name
    await delete_prefix(REDIS_URL, name)


BACKENDS = ["sqlite", "mariadb"]


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The blog database this test owns, on each backend in turn (``BLOG_DATABASE_URL``)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blog.db'}"
        return
    # The shared server's test user may create databases named t_… (deploy/local/ensure-services).
    url = f"{server_url('MYSQL')}/t_blog_{uuid.uuid4().hex[:16]}"
    yield url
    await drop_database(url)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    await migrate(database_url)
    database = await open_database(database_url)
    yield database
    await database.close()


@pytest.fixture
async def private_redis() -> AsyncIterator[RedisServer]:
    """A redis-server of the test's own, to stop and start (the shared one is never touched)."""
    server = RedisServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = open_redis(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def make_cache(prefix: str) -> AsyncIterator[MakeCache]:
    """Caches on one prefix (like replicas), each with its own Redis client, listening before use."""
    made: list[tuple[Cache, Redis]] = []

    async def make(url: str = REDIS_URL, **options: Any) -> Cache:
        client = open_redis(url)
        cache = Cache(client, url, prefix=prefix, ttl_s=options.pop("ttl_s", 60.0), **options)
        made.append((cache, client))
        cache.start()
        if cache.enabled:
            await wait_until(cache.versions.connected.is_set, timeout=5, message="invalidation channel up")
        return cache

    yield make
    for cache, client in made:
        await cache.close()
        await client.aclose()


@pytest.fixture
async def cache(make_cache: MakeCache) -> Cache:
    return await make_cache()


@pytest.fixture
def passwords() -> Passwords:
    # Argon2id with test-sized cost: the algorithm is real, only the work factor is small.
    return Passwords(time_cost=1, memory_kib=1024, parallelism=1)


@pytest.fixture
def settings(database_url: str, prefix: str) -> BlogSettings:
    return blog_settings(database_url, prefix)


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Real blog apps on real sockets; waits until each one's cache listens for invalidations."""
    clients: list[Client] = []

    async def make(settings: BlogSettings) -> Client:
        client: Client = TestClient(TestServer(build_app(settings)))
        await client.start_server()
        clients.append(client)
        cache = client.app[CACHE]
        if cache.enabled:
            await wait_until(cache.versions.connected.is_set, timeout=5, message="invalidation channel up")
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: MakeClient, settings: BlogSettings) -> Client:
    return await make_client(settings)
