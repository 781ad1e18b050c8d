"""Helpers shared by the blog tests: settings for a test app, API shortcuts, Redis clean-up."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from asynccore.testing import server_url
from blog.cache import Cache
from blog.settings import BlogSettings

REDIS_URL = server_url("REDIS") + "/0"

Client = TestClient[web.Request, web.Application]
MakeCache = Callable[..., Awaitable[Cache]]
MakeClient = Callable[..., Awaitable[Client]]


async def delete_prefix(url: str, prefix: str) -> None:
    client = Redis.from_url(url, socket_timeout=2)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def blog_settings(database_url: str, prefix: str, **overrides: Any) -> BlogSettings:
    values: dict[str, Any] = {
        "blog_database_url": database_url,
        "blog_cache_prefix": prefix,
        "redis_url": REDIS_URL,
        "revocation_url": REDIS_URL,
        "revocation_prefix": f"{prefix}:auth:",  # under the test's prefix: deleted with it
        "blog_argon2_time_cost": 1,
        "blog_argon2_memory_kib": 1024,
        "blog_argon2_parallelism": 1,
        "blog_public_url": "http://blog.test",
        "log_json": False,
        **overrides,
    }
    return BlogSettings(**values)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


async def register(client: Client, username: str | None = None) -> str:
    """A new user through the API; their token."""
    name = username or f"u{uuid.uuid4().hex[:10]}"
    resp = await client.post(
        "/api/users",
        json={"user": {"username": name, "email": f"{name}@example.com", "password": "secret-pw"}},
    )
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["user"]["token"])


async def post_article(client: Client, token: str, title: str, **fields: Any) -> dict[str, Any]:
    article = {"title": title, "description": f"about {title}", "body": f"# {title}\n\ntext", **fields}
    resp = await client.post("/api/articles", json={"article": article}, headers=auth(token))
    assert resp.status == 201, await resp.text()
    return dict((await resp.json())["article"])
