"""Fixtures: a SQLite file per test, the shared Redis under a key prefix per test, real apps."""

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

from asynccore.migrations import apply_migrations
from asynccore.pools.redis import open_redis
from asynccore.pools.sqlite import SQLiteDB
from asynccore.testing import wait_until
from blog.app import build_app
from blog.cache import Cache
from blog.db import MIGRATIONS
from blog.passwords import Passwords
from blog.resources import CACHE
from blog.settings import BlogSettings

# Services refuse to start without a JWT secret (no default in code): these tests sign with their own.
os.environ.setdefault("JWT_SECRET", secrets.token_urlsafe(32))


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A Redis key prefix owned by this test; its keys are deleted afterwards."""
    name = f"blogtest-{uuid.uuid4().hex[:12]}"
    yield name
    await delete_prefix(REDIS_URL, name)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "blog.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[SQLiteDB]:
    await apply_migrations(str(db_path), MIGRATIONS)
    database = await SQLiteDB.open(str(db_path))
    yield database
    await database.close()


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
def settings(db_path: Path, prefix: str) -> BlogSettings:
    return blog_settings(db_path, prefix)


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
