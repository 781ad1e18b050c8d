"""JWT verification: only HS256 tokens signed with our secret, unexpired, with the contract's claims."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asynccore.app import add_routes, create_app
from asynccore.auth import issue_token, optional_caller, require_caller, verify_token
from asynccore.errors import ApiError
from asynccore.settings import ServiceSettings

SECRET = uuid.uuid4().hex + uuid.uuid4().hex  # 64 bytes: long enough for HS256 and HS512 alike


def claims(*, without: str = "") -> dict[str, object]:
    now = int(time.time())
    full: dict[str, object] = {"sub": "42", "username": "jake", "iat": now, "exp": now + 60}
    return {k: v for k, v in full.items() if k != without}


def tampered(token: str) -> str:
    """The same token with its payload claiming another user; the signature no longer matches."""
    header, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["sub"] = "1"
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_issued_token_verifies_to_its_caller() -> None:
    token = issue_token(SECRET, "42", "jake", ttl_s=60)
    caller = verify_token(SECRET, token)
    assert (caller.user_id, caller.username, caller.token) == ("42", "jake", token)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "expired": lambda: issue_token(SECRET, "42", "jake", ttl_s=-10),
    "tampered": lambda: tampered(issue_token(SECRET, "42", "jake", ttl_s=60)),
    "other-secret": lambda: issue_token(uuid.uuid4().hex * 2, "42", "jake", ttl_s=60),
    "hs512": lambda: jwt.encode(claims(), SECRET, algorithm="HS512"),
    "alg-none": lambda: jwt.encode(claims(), None, algorithm="none"),
    "no-username": lambda: jwt.encode(claims(without="username"), SECRET, algorithm="HS256"),
    "no-exp": lambda: jwt.encode(claims(without="exp"), SECRET, algorithm="HS256"),
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("kind", BAD_TOKENS)
def test_bad_tokens_are_401(kind: str) -> None:
    with pytest.raises(ApiError) as raised:
        verify_token(SECRET, BAD_TOKENS[kind]())
    assert raised.value.status == 401
    assert list(raised.value.errors) == ["token"]
    assert raised.value.headers == {"WWW-Authenticate": "Token"}


def test_expired_token_says_so() -> None:
    with pytest.raises(ApiError) as raised:
        verify_token(SECRET, issue_token(SECRET, "42", "jake", ttl_s=-10))
    assert raised.value.errors == {"token": ["token expired"]}


def make_app() -> web.Application:
    app = create_app(f"test-{uuid.uuid4().hex[:8]}", ServiceSettings())

    async def me(request: web.Request) -> web.Response:
        caller = require_caller(request, SECRET)
        assert require_caller(request, SECRET) is caller  # verified once per request, then cached
        return web.json_response({"user_id": caller.user_id, "username": caller.username})

    async def feed(request: web.Request) -> web.Response:
        caller = optional_caller(request, SECRET)
        return web.json_response({"user": caller.username if caller else None})

    add_routes(app, [web.get("/me", me)])
    add_routes(app, [web.get("/feed", feed)])
    return app


@pytest.mark.parametrize("scheme", ["Token", "Bearer"])
async def test_token_and_bearer_schemes_are_accepted(scheme: str) -> None:
    token = issue_token(SECRET, "42", "jake", ttl_s=60)
    async with TestClient(TestServer(make_app())) as client:
        resp = await client.get("/me", headers={"Authorization": f"{scheme} {token}"})
        assert resp.status == 200
        assert await resp.json() == {"user_id": "42", "username": "jake"}


async def assert_401(headers: dict[str, str]) -> None:
    async with TestClient(TestServer(make_app())) as client:
        resp = await client.get("/me", headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == "Token"
        body = await resp.json()
        assert list(body) == ["errors"] and list(body["errors"]) == ["token"]


@pytest.mark.parametrize(
    "authorization", [None, "Basic amFrZTpqYWtl", "Token ", "Token", "eyJhbGciOiJIUzI1NiJ9.e30.sig"]
)
async def test_missing_or_malformed_authorization_is_401(authorization: str | None) -> None:
    await assert_401({"Authorization": authorization} if authorization is not None else {})


@pytest.mark.parametrize("scheme", ["Token", "Bearer"])
@pytest.mark.parametrize("kind", ["expired", "tampered", "hs512", "alg-none"])
async def test_bad_tokens_are_401_over_http(scheme: str, kind: str) -> None:
    await assert_401({"Authorization": f"{scheme} {BAD_TOKENS[kind]()}"})


async def test_optional_caller_is_anonymous_without_a_token_but_401_with_a_bad_one() -> None:
    good = issue_token(SECRET, "7", "ann", ttl_s=60)
    async with TestClient(TestServer(make_app())) as client:
        anonymous = await client.get("/feed")
        assert (anonymous.status, await anonymous.json()) == (200, {"user": None})
        known = await client.get("/feed", headers={"Authorization": f"Token {good}"})
        assert (known.status, await known.json()) == (200, {"user": "ann"})
        bad = await client.get("/feed", headers={"Authorization": f"Token {tampered(good)}"})
        assert bad.status == 401
