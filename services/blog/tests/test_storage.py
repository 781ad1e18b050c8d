"""The storage seam: both backends give the same answers and the same write guarantees (issue 20)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from blog_testing import Client, auth, post_article, register

from asynccore.testing import wait_until
from blog import articles, users
from blog.cache import Cache
from blog.db import Database, Duplicate, MissingReference, execute, fetch_all, fetch_one
from blog.inputs import NewArticle, NewUser
from blog.passwords import Passwords
from blog.settings import BlogSettings
from blog.storage import open_database


async def _account(db: Database, passwords: Passwords, name: str) -> users.Account:
    new = NewUser.model_validate({"username": name, "email": f"{name}@example.com", "password": "password"})
    return await users.register(db, passwords, new)


async def test_text_compares_and_sorts_by_code_point_emails_ignore_case(client: Client) -> None:
    token = await register(client, "Zed")
    article = await post_article(client, token, "Order", tagList=["é", "b", "B", "e", "a "])
    assert article["tagList"] == ["B", "a", "b", "e", "é"]  # code point order; tags are trimmed
    assert (await client.get("/api/profiles/Zed")).status == 200
    assert (await client.get("/api/profiles/zed")).status == 404  # usernames: exact, like SQLite's BINARY
    resp = await client.get("/api/articles?tag=B")
    assert [a["slug"] for a in (await resp.json())["articles"]] == [article["slug"]]
    assert (await (await client.get("/api/articles?tag=É")).json())["articlesCount"] == 0
    user = {"username": "other", "email": "ZED@example.com", "password": "long-enough"}
    resp = await client.post("/api/users", json={"user": user})
    assert resp.status == 422 and "email" in (await resp.json())["errors"]  # NOCASE, as on SQLite


async def test_dates_are_the_stored_iso_text(client: Client) -> None:
    token = await register(client)
    article = await post_article(client, token, "Dated")
    resp = await client.put(
        f"/api/articles/{article['slug']}", json={"article": {"body": "later"}}, headers=auth(token)
    )
    updated = (await resp.json())["article"]
    for stamp in (article["createdAt"], updated["updatedAt"]):
        assert len(stamp) == 24 and stamp[10] == "T" and stamp.endswith("Z"), stamp
    assert updated["createdAt"] == article["createdAt"] <= updated["updatedAt"]


async def test_integrity_errors_are_the_seams_own(db: Database, passwords: Passwords) -> None:
    author = await _account(db, passwords, "integrity")
    with pytest.raises(Duplicate) as duplicate:
        async with db.write() as conn:
            await execute(
                conn,
                "test",
                "INSERT INTO users (username, username_key, email, password_hash, created_at, updated_at)"
                " VALUES (?, ?, ?, 'h', 't', 't')",
                ("INTEGRITY", "integrity", "x@example.com"),
            )
    assert "username_key" in duplicate.value.key
    with pytest.raises(MissingReference):
        async with db.write() as conn:
            await execute(
                conn,
                "test",
                "INSERT INTO follows (follower_id, followee_id) VALUES (?, ?)",
                (author.id, 10**9),
            )


async def test_a_failed_or_cancelled_write_leaves_nothing_behind(db: Database) -> None:
    async def insert(tag: str) -> None:
        async with db.write() as conn:
            await execute(conn, "test", "INSERT INTO article_tags (article_id, tag) VALUES (?, ?)", (1, tag))

    with pytest.raises(MissingReference):  # no article 1: the whole transaction rolls back
        await insert("lost")
    entered = asyncio.Event()

    async def stuck() -> None:
        async with db.write() as conn:
            await fetch_all(conn, "test", "SELECT 1")
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(stuck())
    await wait_until(entered.is_set, timeout=5, message="the write began")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):  # the writer's lock (and MariaDB's named lock) was let go
        async with db.write() as conn:
            await execute(conn, "test", "DELETE FROM article_tags", ())
        async with db.read() as conn:
            assert await fetch_one(conn, "test", "SELECT count(*) AS n FROM article_tags") is not None


async def test_two_replicas_favouriting_one_article_at_once_count_every_favourite(
    db: Database, cache: Cache, passwords: Passwords, database_url: str
) -> None:
    # Each favourite inserts a row pointing at the article, then updates the article's count: on
    # MariaDB two such transactions at once would deadlock (shared then exclusive row locks); the
    # one-writer-at-a-time write lock, across processes, keeps them apart as SQLite does.
    author = await _account(db, passwords, "popular")
    new = NewArticle.model_validate({"title": "Hot", "description": "d", "body": "b"})
    slug = orjson.loads(await articles.create(db, cache, author.id, new))["article"]["slug"]
    fans = [await _account(db, passwords, f"fan{i}") for i in range(12)]
    other = await open_database(database_url)  # a second replica's pool on the same database
    try:
        await asyncio.gather(
            *(articles.favorite(db if i % 2 else other, cache, fan.id, slug) for i, fan in enumerate(fans))
        )
    finally:
        await other.close()
    assert (await articles.fetch_article(db, slug))["favoritesCount"] == len(fans)


def test_the_database_url_defaults_to_the_sqlite_file() -> None:
    assert BlogSettings(blog_db_path="/x/blog.db").database_url == "sqlite:////x/blog.db"
    url = "mysql://u:p@db:3306/blog"
    assert BlogSettings(blog_database_url=url).database_url == url
    with pytest.raises(ValueError, match="blog_database_url"):
        BlogSettings(blog_database_url="postgres://db/blog")
