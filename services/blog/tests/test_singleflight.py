"""Single-flight on its own: one task per key in a process, one loader per key across replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from blog_testing import REDIS_URL
from redis.asyncio import Redis

from asynccore.pools.redis import open_redis
from asynccore.resilience import CircuitBreaker
from asynccore.testing import free_port, wait_until
from blog.singleflight import FillLock, RedisUnavailable, SingleFlight


class Load:
    """Counts its calls; each call waits for ``release`` (if given) before answering ``value``."""

    def __init__(self, value: bytes = b"v", release: asyncio.Event | None = None) -> None:
        self.value = value
        self.release = release
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        if self.release is not None:
            await self.release.wait()
        return self.value


# ---------------------------------------------------------------------------- in process


async def test_concurrent_callers_of_one_key_share_one_run() -> None:
    flights: SingleFlight[bytes] = SingleFlight()
    release = asyncio.Event()
    load, joins = Load(release=release), []
    callers = [asyncio.create_task(flights.run("k", load, lambda: joins.append(1))) for _ in range(50)]
    await wait_until(lambda: len(joins) == 49, timeout=5, message="every caller joined")
    release.set()
    assert await asyncio.gather(*callers) == [b"v"] * 50
    assert load.calls == 1
    assert flights.tasks() == []  # nothing kept once it is done


async def test_different_keys_run_separately() -> None:
    flights: SingleFlight[bytes] = SingleFlight()
    load = Load()
    assert list(await asyncio.gather(flights.run("a", load), flights.run("b", load))) == [b"v", b"v"]
    assert load.calls == 2


async def test_a_failure_is_shared_and_not_remembered() -> None:
    flights: SingleFlight[bytes] = SingleFlight()
    calls = 0

    async def failing() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise LookupError("gone")

    results = await asyncio.gather(*(flights.run("k", failing) for _ in range(10)), return_exceptions=True)
    assert calls == 1 and all(isinstance(r, LookupError) for r in results)
    with pytest.raises(LookupError):
        await flights.run("k", failing)
    assert calls == 2


async def test_a_caller_giving_up_does_not_cancel_the_others() -> None:
    flights: SingleFlight[bytes] = SingleFlight()
    release = asyncio.Event()
    load = Load(release=release)
    impatient = asyncio.create_task(flights.run("k", load))
    patient = asyncio.create_task(flights.run("k", load))
    await wait_until(lambda: load.calls == 1, timeout=5, message="the load started")
    impatient.cancel()
    release.set()
    assert await patient == b"v"
    assert impatient.cancelled() and load.calls == 1


# ---------------------------------------------------------------------------- across replicas


@pytest.fixture
async def replicas(prefix: str) -> AsyncIterator[tuple[FillLock, FillLock]]:
    """Two fill locks on separate Redis clients, as two replicas hold them."""
    one, two = open_redis(REDIS_URL), open_redis(REDIS_URL)
    yield (
        FillLock(one, CircuitBreaker(f"{prefix}-one"), lock_ms=2000),
        FillLock(two, CircuitBreaker(f"{prefix}-two"), lock_ms=2000),
    )
    await one.aclose()
    await two.aclose()


async def test_one_replica_loads_while_the_other_waits_for_its_value(
    replicas: tuple[FillLock, FillLock], prefix: str
) -> None:
    a, b = replicas
    release = asyncio.Event()
    load_a, load_b = Load(b"from a", release), Load(b"from b")
    keys = (f"{prefix}:c:k", f"{prefix}:lock:k")
    first = asyncio.create_task(a.fill(*keys, load_a, 60_000))
    await wait_until(lambda: load_a.calls == 1, timeout=5, message="a holds the lock and loads")
    second = asyncio.create_task(b.fill(*keys, load_b, 60_000))
    release.set()
    filled_a, filled_b = await first, await second
    assert (filled_a.body, filled_a.loaded, filled_a.stored) == (b"from a", True, True)
    assert (filled_b.body, filled_b.loaded) == (b"from a", False)
    assert load_b.calls == 0


async def test_a_filled_value_is_found_with_its_ttl_and_the_lock_is_gone(
    replicas: tuple[FillLock, FillLock], redis: Redis, prefix: str
) -> None:
    a, b = replicas
    keys = (f"{prefix}:c:k", f"{prefix}:lock:k")
    await a.fill(*keys, Load(b"once"), 60_000)
    assert not await redis.exists(keys[1])
    found = await b.fill(*keys, Load(b"twice"), 60_000)
    assert (found.body, found.loaded) == (b"once", False)
    assert 50 < found.ttl_s <= 60


async def test_a_failed_load_releases_the_lock_at_once(
    replicas: tuple[FillLock, FillLock], redis: Redis, prefix: str
) -> None:
    a, _ = replicas
    keys = (f"{prefix}:c:k", f"{prefix}:lock:k")

    async def failing() -> bytes:
        raise LookupError("not found")

    with pytest.raises(LookupError):
        await a.fill(*keys, failing, 60_000)
    assert not await redis.exists(*keys)  # nothing stored, the next replica need not wait


async def test_redis_failing_before_the_load_is_reported_not_loaded(prefix: str) -> None:
    client = open_redis(f"redis://127.0.0.1:{free_port()}/0")  # nobody listens there
    try:
        lock = FillLock(client, CircuitBreaker(f"{prefix}-down"), lock_ms=2000)
        load = Load()
        with pytest.raises(RedisUnavailable):
            await lock.fill(f"{prefix}:c:k", f"{prefix}:lock:k", load, 60_000)
        assert load.calls == 0  # the caller decides how to load without Redis
    finally:
        await client.aclose()


async def test_a_lapsed_lock_lets_the_next_replica_load(redis: Redis, prefix: str) -> None:
    client = open_redis(REDIS_URL)
    try:
        lock = FillLock(client, CircuitBreaker(f"{prefix}-lapse"), lock_ms=300)
        await redis.set(f"{prefix}:lock:k", "a replica that died", px=300)
        load = Load(b"mine")
        started = asyncio.get_running_loop().time()
        filled = await lock.fill(f"{prefix}:c:k", f"{prefix}:lock:k", load, 60_000)
        assert (filled.body, filled.loaded, load.calls) == (b"mine", True, 1)
        assert asyncio.get_running_loop().time() - started < 2
    finally:
        await client.aclose()
