"""A password change published once is refused by every service that checks (asynccore.revocation)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from asynccore.app import add_routes, create_app
from asynccore.auth import Caller, issue_token, verify_token
from asynccore.errors import ApiError
from asynccore.revocation import (
    TokenRevocations,
    current_caller,
    publish_token_version,
    token_revocations,
    version_key,
)
from asynccore.settings import UserServiceSettings
from asynccore.testing import wait_until

SECRET = secrets.token_urlsafe(32)


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def caller(user_id: str, version: int) -> Caller:
    return verify_token(SECRET, issue_token(SECRET, user_id, "ann", 60, version=version))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=2)
    yield client
    await client.aclose()


async def test_tokens_older_than_the_published_version_are_refused(redis: Redis, redis_prefix: str) -> None:
    revocations = TokenRevocations(redis, redis_prefix, cache_s=0)
    old, new = caller("42", 0), caller("42", 1)
    assert await revocations.check(old) is old  # nothing published: every valid token counts

    assert await publish_token_version(redis, redis_prefix, "42", 1, ttl_s=60)
    with pytest.raises(ApiError) as refused:
        await revocations.check(old)
    assert refused.value.status == 401 and "revoked" in refused.value.errors["token"][0]
    assert await revocations.check(new) is new
    assert await revocations.check(caller("43", 0))  # another user is untouched


async def test_a_version_is_never_lowered_and_lives_one_token_lifetime(
    redis: Redis, redis_prefix: str
) -> None:
    await publish_token_version(redis, redis_prefix, "7", 3, ttl_s=60)
    await publish_token_version(redis, redis_prefix, "7", 2, ttl_s=60)  # an older change, published late
    key = version_key(redis_prefix, "7")
    assert await redis.get(key) == b"3"
    assert 0 < await redis.pttl(key) <= 60_000  # after the lifetime every older token has expired


async def test_a_published_change_takes_effect_within_the_remembered_second(
    redis: Redis, redis_prefix: str
) -> None:
    revocations = TokenRevocations(redis, redis_prefix, cache_s=0.2)
    old = caller("5", 0)
    await revocations.check(old)
    await publish_token_version(redis, redis_prefix, "5", 1, ttl_s=60)
    assert await revocations.check(old) is old  # remembered: one GET per user per cache_s, not per request

    async def refused() -> bool:
        try:
            await revocations.check(old)
        except ApiError:
            return True
        return False

    await wait_until(refused, timeout=2, message="the published change never took effect")


async def _mget_calls(redis: Redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_mget", {}).get("calls", 0))


async def test_users_checked_together_cost_one_mget(redis: Redis, redis_prefix: str) -> None:
    """A flash sale: 500 distinct buyers arriving at once are one round trip, not 500 (this package's
    tests run one at a time, so the server's MGET count is this test's)."""
    await publish_token_version(redis, redis_prefix, "buyer-7", 1, ttl_s=60)
    revocations = TokenRevocations(redis, redis_prefix)
    before = await _mget_calls(redis)
    buyers = [caller(f"buyer-{n}", 0) for n in range(500)]
    outcomes = await asyncio.gather(*(revocations.check(buyer) for buyer in buyers), return_exceptions=True)
    assert await _mget_calls(redis) - before == 1
    refused = [n for n, outcome in enumerate(outcomes) if isinstance(outcome, ApiError)]
    assert refused == [7]  # each buyer still gets its own answer
    assert await revocations.check(buyers[3]) is buyers[3]  # remembered: no second read
    assert await _mget_calls(redis) - before == 1


async def test_redis_out_of_reach_lets_valid_tokens_through_counted(redis_prefix: str) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2)
    try:
        before = _sample("auth_revocation_unchecked_total")
        revocations = TokenRevocations(dead, redis_prefix, cache_s=10)
        token = caller("9", 0)
        assert await revocations.check(token) is token
        assert await revocations.check(token) is token  # remembered: no second timeout
        assert _sample("auth_revocation_unchecked_total") - before == 2
        unpublished = _sample("auth_revocation_unpublished_total")
        assert not await publish_token_version(dead, redis_prefix, "9", 1, ttl_s=60)
        assert _sample("auth_revocation_unpublished_total") == unpublished + 1
    finally:
        await dead.aclose()


async def test_current_caller_is_a_401_for_a_revoked_token_over_http(
    redis: Redis, redis_url: str, redis_prefix: str, service: str
) -> None:
    settings = UserServiceSettings(
        jwt_secret=SECRET, revocation_url=redis_url, revocation_prefix=redis_prefix
    )

    async def me(request: web.Request) -> web.Response:
        who = await current_caller(request, SECRET)
        return web.json_response({"user": who.user_id})

    app = create_app(service, settings, resources=[token_revocations(settings)])
    add_routes(app, [web.get("/me", me)])
    old = issue_token(SECRET, "11", "ann", 60, version=0)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/me", headers={"Authorization": f"Token {old}"})
        assert resp.status == 200
        await publish_token_version(redis, redis_prefix, "11", 1, ttl_s=60)

        async def refused() -> bool:  # the service remembers a user's version for 1 s
            resp = await client.get("/me", headers={"Authorization": f"Token {old}"})
            return resp.status == 401 and "revoked" in (await resp.json())["errors"]["token"][0]

        await wait_until(refused, timeout=3, message="the revoked token still answers 200")
