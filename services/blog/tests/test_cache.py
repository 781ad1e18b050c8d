"""The cache against the real shared Redis: tiers, versions, single-flight, the fill lock, TTL jitter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import orjson
import pytest
from blog_testing import MakeCache
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from asynccore.errors import ApiError
from asynccore.testing import wait_until
from blog import articles, users
from blog.cache import Cache, entry_cost
from blog.db import Database
from blog.inputs import NewArticle, NewUser
from blog.passwords import Passwords


class Loader:
    """A loader that counts its calls and returns whatever ``value`` is now."""

    def __init__(self, value: bytes = b"v1", delay_s: float = 0.0) -> None:
        self.value = value
        self.delay_s = delay_s
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return self.value


def queries(name: str) -> float:
    return REGISTRY.get_sample_value("blog_db_queries_total", {"query": name}) or 0.0


def cache_metric(name: str, family: str) -> float:
    return REGISTRY.get_sample_value(name, {"family": family}) or 0.0


async def an_article(db: Database, cache: Cache) -> str:
    """A new article by a new author; its slug."""
    name = f"a{uuid.uuid4().hex[:10]}"
    new_user = NewUser.model_validate(
        {"username": name, "email": f"{name}@example.com", "password": "password"}
    )
    author = await users.register(db, Passwords(time_cost=1, memory_kib=1024, parallelism=1), new_user)
    new = NewArticle.model_validate(
        {"title": f"Cold {uuid.uuid4().hex[:8]}", "description": "d", "body": "b"}
    )
    created = orjson.loads(await articles.create(db, cache, author.id, new))
    return str(created["article"]["slug"])


async def test_second_read_is_served_without_loading(cache: Cache) -> None:
    load = Loader()
    first = await cache.get("t", "k", ("x",), load)
    second = await cache.get("t", "k", ("x",), load)
    assert (first.body, second.body, load.calls) == (b"v1", b"v1", 1)
    assert second is first  # the same ready-to-send bytes object, from process memory
    assert first.etag.startswith('"') and first.etag == second.etag


async def test_another_replica_reads_redis_not_the_loader(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    load = Loader()
    await a.get("t", "k", ("x",), load)
    entry = await b.get("t", "k", ("x",), load)
    assert (entry.body, load.calls) == (b"v1", 1)


async def test_a_bump_makes_every_dependent_entry_stale_and_nothing_else(cache: Cache) -> None:
    lists, page, tag_list = Loader(b"list"), Loader(b"page"), Loader(b"tags")
    for _ in range(2):
        await cache.get("list", "1", ("articles",), lists)
        await cache.get("page", "1", ("articles", "users"), page)
        await cache.get("tags", "all", ("tags",), tag_list)
    await cache.invalidate("articles")
    await cache.get("list", "1", ("articles",), lists)
    await cache.get("page", "1", ("articles", "users"), page)
    await cache.get("tags", "all", ("tags",), tag_list)
    assert (lists.calls, page.calls, tag_list.calls) == (2, 2, 1)


async def test_read_your_write_in_the_writing_process(cache: Cache) -> None:
    load = Loader(b"old")
    assert (await cache.get("article", "s", ("a:s",), load)).body == b"old"
    load.value = b"new"
    await cache.invalidate("a:s")  # returns only after Redis took the bump
    assert (await cache.get("article", "s", ("a:s",), load)).body == b"new"


async def test_a_write_on_one_replica_reaches_the_others(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    load = Loader(b"old")
    await a.get("article", "s", ("a:s",), load)
    assert (await b.get("article", "s", ("a:s",), load)).body == b"old"
    load.value = b"new"
    await a.invalidate("a:s")

    async def b_sees_new() -> bool:
        return (await b.get("article", "s", ("a:s",), load)).body == b"new"

    # Redis pushed the invalidation to b before it answered a; b applies it on its next loop turn.
    await wait_until(b_sees_new, timeout=1, message="replica b reads the new value")


def settled(cache: Cache, slug: str, load: Loader) -> Callable[[], Awaitable[bool]]:
    """Whether a read of article ``slug`` leaves it servable by peek.

    Creating a version key makes Redis push an invalidation of it to every replica, the creator
    included; until that has arrived, a read may find the version unknown again.
    """

    async def check() -> bool:
        await cache.get("article", slug, (f"a:{slug}",), load)
        return cache.peek("article", slug) is not None

    return check


async def test_peek_serves_from_memory_only_until_something_is_invalidated(cache: Cache) -> None:
    load = Loader(b"old")
    await cache.invalidate("a:s")  # the row was written: its version exists
    assert cache.peek("article", "s") is None  # nothing yet: peek never loads
    entry = await cache.get("article", "s", ("a:s",), load)
    await wait_until(settled(cache, "s", load), timeout=1, message="peek serves the entry")
    hits = cache_metric("blog_cache_hits_total", "article")
    assert cache.peek("article", "s") is entry
    assert cache_metric("blog_cache_hits_total", "article") == hits + 1
    await cache.invalidate("users")  # unrelated to the entry, but peek cannot know that
    assert cache.peek("article", "s") is None
    assert await cache.get("article", "s", ("a:s",), load) is entry  # checked again, not loaded
    assert cache.peek("article", "s") is entry
    load.value = b"new"
    await cache.invalidate("a:s")
    assert cache.peek("article", "s") is None
    assert (await cache.get("article", "s", ("a:s",), load)).body == b"new"
    assert load.calls == 2


async def test_peek_on_a_replica_stops_when_another_replica_writes(make_cache: MakeCache) -> None:
    a, b = await make_cache(), await make_cache()
    load = Loader(b"old")
    await a.get("article", "s", ("a:s",), load)
    await wait_until(settled(b, "s", load), timeout=1, message="peek on b serves the entry")
    assert b.peek("article", "s") is not None
    await a.invalidate("a:s")
    # Redis queued the invalidation for b before it answered a; b applies it on its next loop turn.
    await wait_until(lambda: b.peek("article", "s") is None, timeout=1, message="b stops serving old")
    load.value = b"new"
    assert (await b.get("article", "s", ("a:s",), load)).body == b"new"


async def test_cold_key_under_200_readers_costs_one_sqlite_query(db: Database, cache: Cache) -> None:
    slug = await an_article(db, cache)
    await cache.invalidate(articles.article_version(slug))  # the key is cold again
    before = queries("article_by_slug")
    entries = await asyncio.gather(*(articles.article_cached(db, cache, slug) for _ in range(200)))
    assert queries("article_by_slug") - before == 1
    assert len({entry.body for entry in entries}) == 1
    assert cache_metric("blog_cache_singleflight_joins_total", "article") >= 199


async def test_cold_key_across_two_replicas_costs_one_sqlite_query(
    db: Database, make_cache: MakeCache
) -> None:
    a, b = await make_cache(), await make_cache()
    slug = await an_article(db, a)
    await a.invalidate(articles.article_version(slug))
    await wait_until(lambda: b.versions.local(("a:" + slug,)) is None, timeout=1)
    before = queries("article_by_slug")
    readers = [articles.article_cached(db, cache, slug) for cache in (a, b) for _ in range(100)]
    entries = await asyncio.gather(*readers)
    # One replica held the Redis fill lock and loaded; the other waited for its value.
    assert queries("article_by_slug") - before == 1
    assert len({entry.body for entry in entries}) == 1


async def test_a_replica_waits_for_the_one_holding_the_fill_lock(
    cache: Cache, redis: Redis, prefix: str
) -> None:
    load = Loader(b"mine")
    stamp = ".".join(await cache.versions.current(("epoch", "x")))
    lock_key, value_key = f"{prefix}:lock:t:k@{stamp}", f"{prefix}:c:t:k@{stamp}"
    await redis.set(lock_key, "another replica", px=5000)
    reader = asyncio.create_task(cache.get("t", "k", ("x",), load))
    await wait_until(lambda: cache.fill_lock.waiting == 1, timeout=5, message="the reader waits for the lock")
    assert not reader.done() and load.calls == 0  # waiting, not loading
    await redis.set(value_key, b"theirs", px=60_000)
    await redis.delete(lock_key)
    assert (await reader).body == b"theirs"
    assert load.calls == 0


async def test_a_lapsed_fill_lock_does_not_block_forever(
    make_cache: MakeCache, redis: Redis, prefix: str
) -> None:
    cache = await make_cache(lock_ms=300)
    load = Loader(b"mine")
    stamp = ".".join(await cache.versions.current(("epoch", "x")))
    await redis.set(f"{prefix}:lock:t:k@{stamp}", "a replica that died", px=300)
    started = asyncio.get_running_loop().time()
    assert (await cache.get("t", "k", ("x",), load)).body == b"mine"
    assert load.calls == 1
    assert 0.2 <= asyncio.get_running_loop().time() - started < 2


async def test_a_failed_load_is_shared_and_not_cached(cache: Cache) -> None:
    calls = 0

    async def missing() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ApiError(404, "article", "not found")

    results = await asyncio.gather(
        *(cache.get("t", "gone", ("x",), missing) for _ in range(50)), return_exceptions=True
    )
    assert calls == 1
    assert all(isinstance(r, ApiError) and r.status == 404 for r in results)
    with pytest.raises(ApiError):
        await cache.get("t", "gone", ("x",), missing)
    assert calls == 2


async def test_a_reader_giving_up_does_not_cancel_the_others(cache: Cache) -> None:
    load = Loader(delay_s=0.2)
    impatient = asyncio.create_task(cache.get("t", "slow", ("x",), load))
    patient = asyncio.create_task(cache.get("t", "slow", ("x",), load))
    await wait_until(lambda: load.calls == 1, timeout=5, message="the shared load started")
    impatient.cancel()
    assert (await patient).body == b"v1"
    assert load.calls == 1


async def test_entries_expire_with_jittered_ttls(make_cache: MakeCache, redis: Redis, prefix: str) -> None:
    cache = await make_cache(ttl_s=100.0, ttl_jitter=0.2)
    for i in range(30):
        await cache.get("t", str(i), ("x",), Loader())
    ttls = [await redis.pttl(key) async for key in redis.scan_iter(match=f"{prefix}:c:t:*")]
    assert len(ttls) == 30
    assert all(80_000 - 1_000 <= ttl <= 120_000 for ttl in ttls)
    assert len(set(ttls)) > 10  # spread out, not expiring together
    # Versions expire too (a day unbumped): safe, since a recreated version is a new random token.
    version_ttls = [await redis.ttl(key) async for key in redis.scan_iter(match=f"{prefix}:v:*")]
    assert version_ttls and all(0 < ttl <= 24 * 3600 for ttl in version_ttls)


async def test_deleted_versions_never_bring_old_entries_back(cache: Cache, redis: Redis, prefix: str) -> None:
    """A FLUSHALL or an eviction loses the version keys: fresh random tokens, never the old ones."""
    load = Loader(b"old")
    await cache.get("article", "s", ("a:s",), load)
    load.value = b"new"
    keys = [key async for key in redis.scan_iter(match=f"{prefix}:v:*")]
    await redis.delete(*keys)  # what a flush does to this prefix (never flush the shared server)
    await wait_until(lambda: cache.versions.local(("epoch", "a:s")) is None, timeout=1)
    assert (await cache.get("article", "s", ("a:s",), load)).body == b"new"


async def test_process_memory_tier_is_bounded_in_bytes(make_cache: MakeCache) -> None:
    """The budget counts what an entry really costs, not only its body (test_security measures it)."""
    budget = 3 * entry_cost("0", bytes(300)) + 100
    cache = await make_cache(local_max_bytes=budget)
    for i in range(10):
        await cache.get("t", str(i), ("x",), Loader(bytes(300)))
    assert cache.local.bytes <= budget
    assert len(cache.local) == 3


async def test_a_row_version_is_made_by_writes_and_by_reads_that_found_the_row(
    cache: Cache, redis: Redis, prefix: str
) -> None:
    load = Loader(b"row")
    entry = await cache.get("article", "new", ("a:new",), load)  # nobody wrote it lately
    assert (entry.body, load.calls) == (b"row", 1)
    assert await redis.exists(f"{prefix}:v:a:new")  # the load found it: reads are cached from now on
    await wait_until(settled(cache, "new", load), timeout=1, message="cached as usual")
    assert load.calls == 2

    async def missing() -> bytes:
        raise ApiError(404, "article", "not found")

    for _ in range(3):
        with pytest.raises(ApiError):
            await cache.get("article", "gone", ("a:gone",), missing)
    assert not [key async for key in redis.scan_iter(match=f"{prefix}:*gone*")]


async def test_disabled_cache_always_loads(make_cache: MakeCache) -> None:
    cache = await make_cache(enabled=False)
    load = Loader()
    await cache.get("t", "k", ("x",), load)
    await cache.get("t", "k", ("x",), load)
    assert load.calls == 2
    assert cache.peek("t", "k") is None
