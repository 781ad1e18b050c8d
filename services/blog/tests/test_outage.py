"""Redis going away for real: a private redis-server stopped and started, or cut off by a TCP proxy.

The shared Redis is never touched: each test runs its own server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any

import orjson
import pytest
from blog_testing import MakeCache, MakeClient, blog_settings, post_article, register
from prometheus_client import REGISTRY

from asynccore.pools.redis import open_redis
from asynccore.resilience import CircuitBreaker
from asynccore.testing import RedisServer, TcpProxy, wait_until
from blog import articles, users
from blog.cache import Cache
from blog.db import Database
from blog.inputs import NewArticle, NewUser, UpdateArticle
from blog.passwords import Passwords
from blog.versions import Versions


def fallbacks() -> float:
    return REGISTRY.get_sample_value("blog_cache_redis_fallbacks_total") or 0.0


def hits(family: str) -> float:
    return REGISTRY.get_sample_value("blog_cache_hits_total", {"family": family}) or 0.0


def breaker(reset_after_s: float = 0.3) -> CircuitBreaker:
    return CircuitBreaker(f"test-{uuid.uuid4().hex[:8]}", failure_threshold=2, reset_after_s=reset_after_s)


async def article_by(
    db: Database, cache: Cache, passwords: Passwords, title: str
) -> tuple[users.Account, str]:
    name = f"o{uuid.uuid4().hex[:10]}"
    new_user = NewUser.model_validate(
        {"username": name, "email": f"{name}@example.com", "password": "password"}
    )
    author = await users.register(db, passwords, new_user)
    new = NewArticle.model_validate({"title": title, "description": "d", "body": "before"})
    created = orjson.loads(await articles.create(db, cache, author.id, new))
    return author, str(created["article"]["slug"])


async def body_of(cache: Cache, db: Database, slug: str) -> str:
    return str(orjson.loads((await articles.article_cached(db, cache, slug)).body)["article"]["body"])


async def test_reads_fall_back_to_sqlite_and_the_cache_resumes(
    private_redis: RedisServer,
    make_cache: MakeCache,
    db: Database,
    passwords: Passwords,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Open for longer than the 100 reads below may take (2 s): on MariaDB each is a network round trip.
    cache = await make_cache(private_redis.url, breaker=breaker(reset_after_s=3.0))
    author, slug = await article_by(db, cache, passwords, "Outage")
    assert await body_of(cache, db, slug) == "before"

    await private_redis.stop()
    await wait_until(lambda: not cache.versions.connected.is_set(), timeout=5, message="channel noticed")
    before = fallbacks()
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="blog.cache"):
        for _ in range(100):
            assert await body_of(cache, db, slug) == "before"
    # The breaker answers for Redis: no connect attempt, let alone a timeout, per read.
    assert time.perf_counter() - started < 2.0
    assert cache.breaker.state == "open"
    assert fallbacks() - before == 100
    assert sum("serving from SQLite" in r.message for r in caplog.records) == 1

    # A write while Redis is down still commits; the bump Redis missed cannot leave a stale read.
    await articles.update(db, cache, author.id, slug, UpdateArticle.model_validate({"body": "during"}))
    assert await body_of(cache, db, slug) == "during"

    await private_redis.start()
    await wait_until(cache.versions.connected.is_set, timeout=10, message="channel reconnected")

    async def cached_again() -> bool:
        before_hits = hits("article")
        bodies = [await body_of(cache, db, slug) for _ in range(3)]
        assert bodies == ["during"] * 3
        return hits("article") - before_hits >= 2

    await wait_until(cached_again, timeout=5, message="cache serves hits again")


async def test_entries_cached_before_a_partition_are_not_served_after_it(
    private_redis: RedisServer, make_cache: MakeCache, db: Database, passwords: Passwords
) -> None:
    """The data stays in Redis while one replica is cut off, writes, and comes back."""
    proxy = TcpProxy("127.0.0.1", private_redis.port)
    await proxy.start()
    try:
        cut_off = await make_cache(f"redis://127.0.0.1:{proxy.port}/0", breaker=breaker())
        other = await make_cache(private_redis.url)
        author, slug = await article_by(db, cut_off, passwords, "Partition")
        assert await body_of(cut_off, db, slug) == "before"
        assert await body_of(other, db, slug) == "before"

        await proxy.cut()
        await wait_until(lambda: not cut_off.versions.connected.is_set(), timeout=5)
        await articles.update(db, cut_off, author.id, slug, UpdateArticle.model_validate({"body": "after"}))
        assert await body_of(cut_off, db, slug) == "after"  # bypasses what it cannot invalidate

        await proxy.restore()
        await wait_until(cut_off.versions.connected.is_set, timeout=10, message="channel reconnected")
        # Reconnecting bumped the epoch: the entries built before the write are stale everywhere.
        assert await body_of(cut_off, db, slug) == "after"

        async def other_reads_after() -> bool:
            return await body_of(other, db, slug) == "after"

        await wait_until(other_reads_after, timeout=1, message="the other replica drops its old entry")
    finally:
        await proxy.close()


async def test_the_api_answers_while_redis_is_down(
    private_redis: RedisServer, make_client: MakeClient, database_url: str, prefix: str
) -> None:
    client = await make_client(
        blog_settings(
            database_url,
            prefix,
            redis_url=private_redis.url,
            blog_cache_breaker_failures=2,
            blog_cache_breaker_reset_s=0.3,
        )
    )
    token = await register(client)
    article = await post_article(client, token, "Still here")

    await private_redis.stop()
    for path in (
        "/api/articles",
        f"/api/articles/{article['slug']}",
        "/api/tags",
        "/",
        f"/article/{article['slug']}",
    ):
        resp = await client.get(path)
        assert resp.status == 200, path
    resp = await client.get("/readyz")
    assert resp.status == 503 and "redis" in (await resp.json())["failing"]
    await post_article(client, token, "Written")
    resp = await client.get("/api/articles")
    assert [a["title"] for a in (await resp.json())["articles"]] == ["Written", "Still here"]

    await private_redis.start()

    async def ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await wait_until(ready, timeout=10, message="ready again")


async def test_a_bump_redis_missed_bypasses_the_cache_until_the_epoch_moves(
    private_redis: RedisServer, prefix: str, db: Database, passwords: Passwords
) -> None:
    """Commands fail but the invalidation channel stays up: only the missed bump protects readers."""
    proxy = TcpProxy("127.0.0.1", private_redis.port)
    await proxy.start()
    commands = open_redis(f"redis://127.0.0.1:{proxy.port}/0")
    cache = Cache(commands, private_redis.url, prefix=prefix, ttl_s=60, breaker=breaker())
    cache.start()
    try:
        await wait_until(cache.versions.connected.is_set, timeout=5)
        author, slug = await article_by(db, cache, passwords, "Missed")
        assert await body_of(cache, db, slug) == "before"

        await proxy.cut()
        await articles.update(db, cache, author.id, slug, UpdateArticle.model_validate({"body": "after"}))
        await proxy.restore()
        await wait_until(lambda: cache.breaker.state != "open", timeout=5)
        assert cache.versions.connected.is_set()  # the channel never noticed anything
        assert await body_of(cache, db, slug) == "after"
        assert await body_of(cache, db, slug) == "after"
    finally:
        await cache.close()
        await commands.aclose()
        await proxy.close()


@contextlib.contextmanager
def cancel_as_child_ends(task: asyncio.Task[Any], n: int) -> Iterator[None]:
    """Cancel ``task`` the moment the ``n``-th task it starts from now on finishes.

    That is the moment Python 3.11's ``asyncio.wait_for`` loses a cancel (CPython gh-86296), and
    redis-py sends every command through ``wait_for`` in a task of its own.
    """
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    started = 0

    def factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> Any:
        nonlocal started
        child = previous(loop, coro, **kwargs) if previous else asyncio.Task(coro, loop=loop, **kwargs)
        if asyncio.current_task(loop) is task:
            started += 1
            if started == n:
                child.add_done_callback(lambda _: task.cancel())
        return child

    loop.set_task_factory(factory)
    try:
        yield
    finally:
        loop.set_task_factory(previous)


# A reconnect starts 7 tasks (five commands on the channel's connection, the epoch bump and the
# release of its pooled connection); the 8th is the first probe once the channel is up.
@pytest.mark.parametrize("n", range(1, 9))
async def test_the_invalidation_channel_stops_when_cancelled_while_reconnecting(
    private_redis: RedisServer, prefix: str, n: int
) -> None:
    """Once a lost cancel left the channel running and a cache close waiting for it for good."""
    commands = open_redis(private_redis.url)
    versions = Versions(commands, private_redis.url, prefix, breaker())
    listener = asyncio.create_task(versions.listen())
    try:
        await wait_until(versions.connected.is_set, timeout=5, message="invalidation channel up")
        with cancel_as_child_ends(listener, n):
            await commands.client_kill_filter(_type="pubsub")  # the channel drops and reconnects
            await asyncio.wait([listener], timeout=5)
        assert listener.cancelled(), f"still running after a cancel at its task {n}"
    finally:
        listener.cancel()
        await asyncio.wait([listener], timeout=5)
        await commands.aclose()
