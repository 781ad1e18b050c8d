"""The memo of verified tokens: bounded, never past a token's ``exp``, never holding a bad token."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from test_auth import BAD_TOKENS, SECRET, tampered

from asynccore.auth import VERIFIED, issue_token, verify_token
from asynccore.errors import ApiError
from asynccore.revocation import TokenRevocations, publish_token_version
from asynccore.testing import wait_until
from asynccore.token_memo import TokenMemo


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, socket_timeout=2)
    yield client
    await client.aclose()


def test_an_entry_ends_at_the_tokens_exp() -> None:
    clock = Clock(1_000.0)
    memo: TokenMemo[str] = TokenMemo(clock=clock)
    memo.put("s", "t", "caller", exp=1_060.0)
    clock.now = 1_059.999
    assert memo.get("s", "t") == "caller"
    clock.now = 1_060.0  # PyJWT refuses a token from its exp on: so does the memo
    assert memo.get("s", "t") is None
    memo.put("s", "late", "caller", exp=1_000.0)  # already expired when stored: not kept
    assert memo.get("s", "late") is None and len(memo) == 0


def test_the_memo_is_bounded_and_keeps_the_recently_used() -> None:
    memo: TokenMemo[int] = TokenMemo(max_tokens=3)
    memo.put("s", "t0", 0, exp=4e9)
    for i in range(1, 10):
        assert memo.get("s", "t0") == 0  # used before each insert: the least recent are the others
        memo.put("s", f"t{i}", i, exp=4e9)
        assert len(memo) <= 3
    assert (memo.get("s", "t0"), memo.get("s", "t9"), memo.get("s", "t1")) == (0, 9, None)


def test_another_secret_does_not_find_the_entry() -> None:
    memo: TokenMemo[str] = TokenMemo()
    memo.put("secret-a", "t", "caller", exp=4e9)
    assert memo.get("secret-b", "t") is None


def test_a_verified_token_is_remembered_and_answers_again() -> None:
    token = issue_token(SECRET, "42", "jake", ttl_s=60)
    first = verify_token(SECRET, token)
    assert VERIFIED.get(SECRET, token) is first
    assert verify_token(SECRET, token) is first  # the second request skipped the full check
    assert VERIFIED.get(uuid.uuid4().hex, token) is None  # under another secret it is verified afresh


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_a_bad_token_is_never_remembered(kind: str) -> None:
    token = BAD_TOKENS[kind]()
    for _ in range(2):  # refused the second time too: nothing was kept from the first
        with pytest.raises(ApiError) as raised:
            verify_token(SECRET, token)
        assert raised.value.status == 401
    assert VERIFIED.get(SECRET, token) is None


def test_a_forgery_of_a_remembered_token_is_refused() -> None:
    token = issue_token(SECRET, "42", "jake", ttl_s=60)
    verify_token(SECRET, token)
    with pytest.raises(ApiError) as raised:
        verify_token(SECRET, tampered(token))  # same signature, another payload: another text
    assert raised.value.status == 401


async def test_a_remembered_token_is_refused_once_it_expires() -> None:
    token = issue_token(SECRET, "42", "jake", ttl_s=1)
    verify_token(SECRET, token)
    assert VERIFIED.get(SECRET, token) is not None

    def refused() -> bool:
        try:
            verify_token(SECRET, token)
        except ApiError as exc:
            return exc.errors == {"token": ["token expired"]}
        return False

    await wait_until(refused, timeout=5, message="the memo let an expired token through")


async def test_revocation_applies_to_a_remembered_token(redis: Redis, redis_prefix: str) -> None:
    revocations = TokenRevocations(redis, redis_prefix, cache_s=0)
    token = issue_token(SECRET, "77", "ann", ttl_s=60, version=0)
    caller = verify_token(SECRET, token)
    assert await revocations.check(caller) is caller
    assert await publish_token_version(redis, redis_prefix, "77", 1, ttl_s=60)
    remembered = verify_token(SECRET, token)
    assert remembered is caller  # still a valid signature, from the memo ...
    with pytest.raises(ApiError) as refused:
        await revocations.check(remembered)  # ... and still revoked, checked on this request
    assert refused.value.status == 401 and "revoked" in refused.value.errors["token"][0]
