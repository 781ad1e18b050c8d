"""Version tokens on their own, against the real shared Redis: created once, bumped, pushed, distrusted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest
from blog_testing import REDIS_URL
from redis.asyncio import Redis

from asynccore.pools.redis import open_redis
from asynccore.resilience import CircuitBreaker
from asynccore.testing import TcpProxy, wait_until
from blog.versions import EPOCH, Versions

MakeVersions = Callable[..., Awaitable[Versions]]


@pytest.fixture
async def make_versions(prefix: str) -> AsyncIterator[MakeVersions]:
    """Versions on one prefix (like replicas), each with its own client and a listening channel."""
    made: list[tuple[asyncio.Task[None], Redis]] = []

    async def make(commands_url: str = REDIS_URL) -> Versions:
        client = open_redis(commands_url)
        breaker = CircuitBreaker(f"{prefix}-{len(made)}", failure_threshold=1, reset_after_s=0.2)
        versions = Versions(client, REDIS_URL, prefix, breaker)
        listener = asyncio.create_task(versions.listen())
        made.append((listener, client))
        await wait_until(versions.connected.is_set, timeout=5, message="invalidation channel up")
        return versions

    yield make
    for listener, client in made:
        listener.cancel()
        await asyncio.wait([listener], timeout=5)
        await client.aclose()


async def settled(versions: Versions, names: tuple[str, ...]) -> tuple[str, ...]:
    """The tokens of ``names`` once the local copy holds them.

    Creating a version key makes Redis push an invalidation of it to every listener, the creator
    included; until that has arrived, the local copy may drop what it just learnt.
    """
    found: list[tuple[str, ...] | None] = []

    async def known() -> bool:
        found.append(await versions.current(names))
        return versions.local(names) == found[-1]

    await wait_until(known, timeout=2, message="the local copy holds the tokens")
    tokens = found[-1]
    assert tokens is not None
    return tokens


async def test_tokens_are_made_once_and_read_locally_after(make_versions: MakeVersions) -> None:
    versions = await make_versions()
    names = (EPOCH, "articles")
    tokens = await settled(versions, names)
    assert await versions.current(names) == tokens == versions.local(names)
    assert len(set(tokens)) == 2  # random tokens, one per name


async def test_a_bump_on_one_replica_reaches_the_local_copy_of_another(make_versions: MakeVersions) -> None:
    a, b = await make_versions(), await make_versions()
    names = (EPOCH, "articles")
    before = await settled(b, names)
    generation = b.generation
    await a.bump(["articles"])
    # Redis queued the push for b before it answered a; b applies it on its next loop turn.
    await wait_until(lambda: b.local(names) is None, timeout=1, message="b drops the old token")
    assert b.generation > generation
    after = await b.current(names)
    assert after is not None and after[0] == before[0] and after[1] != before[1]


async def test_a_row_version_is_made_by_writes_or_when_asked_never_by_a_plain_read(
    make_versions: MakeVersions,
) -> None:
    versions = await make_versions()
    assert await versions.current(("a:nobody",)) is None
    assert versions.local(("a:nobody",)) is None
    made = await versions.current(("a:somebody",), create_rows=True)
    assert made is not None and await versions.current(("a:somebody",)) == made
    await versions.bump(["a:written"])
    assert await versions.current(("a:written",)) is not None


async def test_a_bump_redis_missed_leaves_nothing_trusted_until_the_epoch_moves(
    make_versions: MakeVersions,
) -> None:
    """Commands fail but the channel stays up: only the remembered bump protects readers."""
    target = urlsplit(REDIS_URL)
    assert target.port is not None
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port)
    await proxy.start()
    try:
        versions = await make_versions(REDIS_URL.replace(f":{target.port}", f":{proxy.port}", 1))
        names = (EPOCH, "a:s")
        await versions.bump(["a:s"])
        before = await settled(versions, names)
        await proxy.cut()
        await versions.invalidate(["a:s"])  # Redis did not take it: remembered, not raised
        assert versions.local(names) is None  # the local copy is not trusted any more
        await proxy.restore()

        async def answers() -> bool:
            return await versions.current(names) is not None

        await wait_until(answers, timeout=5, message="Redis answers again")
        after = await settled(versions, names)
        assert after[0] != before[0]  # the epoch moved: everything cached before is stale
    finally:
        await proxy.close()
