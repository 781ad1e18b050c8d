"""Article, comment and profile logic, called directly against real SQLite and Redis."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from asynccore.errors import ApiError
from blog import articles, comments, profiles, tags, users
from blog.cache import Cache
from blog.db import Database
from blog.inputs import ArticleFilters, NewArticle, NewComment, NewUser, UpdateArticle, UpdateUser
from blog.passwords import Passwords


async def account(db: Database, passwords: Passwords, name: str | None = None) -> users.Account:
    name = name or f"u{uuid.uuid4().hex[:10]}"
    new = NewUser.model_validate({"username": name, "email": f"{name}@example.com", "password": "password"})
    return await users.register(db, passwords, new)


async def write(
    db: Database, cache: Cache, author: users.Account, title: str, tag_list: Sequence[str] = ()
) -> str:
    new = NewArticle.model_validate(
        {"title": title, "description": "d", "body": "b", "tagList": list(tag_list)}
    )
    return str(orjson.loads(await articles.create(db, cache, author.id, new))["article"]["slug"])


def listed(body: bytes) -> tuple[list[str], int]:
    document = orjson.loads(body)
    return [a["title"] for a in document["articles"]], document["articlesCount"]


async def titles(cache: Cache, db: Database, **filters: Any) -> tuple[list[str], int]:
    return listed((await articles.list_cached(db, cache, ArticleFilters(**filters))).body)


async def test_lists_filter_by_tag_author_and_favorited_newest_first(
    db: Database, cache: Cache, passwords: Passwords
) -> None:
    ann, bob = await account(db, passwords), await account(db, passwords)
    await write(db, cache, ann, "one", ["x"])
    second = await write(db, cache, ann, "two", ["x", "y"])
    await write(db, cache, bob, "three", ["y"])
    await articles.favorite(db, cache, bob.id, second)

    assert await titles(cache, db) == (["three", "two", "one"], 3)
    assert await titles(cache, db, tag="x") == (["two", "one"], 2)
    assert await titles(cache, db, author=ann.username) == (["two", "one"], 2)
    assert await titles(cache, db, favorited=bob.username) == (["two"], 1)
    assert await titles(cache, db, tag="y", author=bob.username) == (["three"], 1)
    assert await titles(cache, db, limit=1, offset=1) == (["two"], 3)
    assert await titles(cache, db, offset=10) == ([], 3)  # past the end still counts
    assert await titles(cache, db, author="nobody") == ([], 0)


async def test_list_items_carry_no_body_but_the_article_does(
    db: Database, cache: Cache, passwords: Passwords
) -> None:
    slug = await write(db, cache, await account(db, passwords), "bodies", ["b", "a"])
    item = orjson.loads((await articles.list_cached(db, cache, ArticleFilters())).body)["articles"][0]
    article = orjson.loads((await articles.article_cached(db, cache, slug)).body)["article"]
    assert "body" not in item and article["body"] == "b"
    assert item["tagList"] == article["tagList"] == ["a", "b"]
    assert list(article) == [
        "slug",
        "title",
        "description",
        "body",
        "tagList",
        "createdAt",
        "updatedAt",
        "favorited",
        "favoritesCount",
        "author",
    ]


async def test_no_stale_read_after_update_and_delete(
    db: Database, cache: Cache, passwords: Passwords
) -> None:
    author = await account(db, passwords)
    slug = await write(db, cache, author, "Before")
    assert await titles(cache, db) == (["Before"], 1)
    await articles.article_cached(db, cache, slug)  # both cached now

    changes = UpdateArticle.model_validate({"title": "After", "body": "new body"})
    updated = orjson.loads(await articles.update(db, cache, author.id, slug, changes))["article"]
    assert updated["slug"] == "after" and updated["body"] == "new body"
    assert await titles(cache, db) == (["After"], 1)
    assert (
        orjson.loads((await articles.article_cached(db, cache, "after")).body)["article"]["title"] == "After"
    )
    with pytest.raises(ApiError) as gone:
        await articles.article_cached(db, cache, slug)  # the old slug is no more
    assert gone.value.status == 404

    await articles.delete(db, cache, author.id, "after")
    assert await titles(cache, db) == ([], 0)
    with pytest.raises(ApiError):
        await articles.article_cached(db, cache, "after")


async def test_only_the_author_may_change_an_article(
    db: Database, cache: Cache, passwords: Passwords
) -> None:
    author, other = await account(db, passwords), await account(db, passwords)
    slug = await write(db, cache, author, "Mine")
    for attempt in (
        articles.update(db, cache, other.id, slug, UpdateArticle.model_validate({"body": "x"})),
        articles.delete(db, cache, other.id, slug),
    ):
        with pytest.raises(ApiError) as refused:
            await attempt
        assert refused.value.status == 403
    with pytest.raises(ApiError) as missing:
        await articles.delete(db, cache, author.id, "no-such-article")
    assert missing.value.status == 404


async def test_same_title_gets_a_distinct_slug(db: Database, cache: Cache, passwords: Passwords) -> None:
    author = await account(db, passwords)
    first, second = (
        await write(db, cache, author, "Hello, World!"),
        await write(db, cache, author, "Hello, World!"),
    )
    assert first == "hello-world"
    assert second.startswith("hello-world-") and second != first
    assert articles.slugify("Ünïcödé & émoji 🐍") == "unicode-emoji"
    assert articles.slugify("!!!") == "article"


async def test_favorites_count_and_personal_flags(db: Database, cache: Cache, passwords: Passwords) -> None:
    author, reader = await account(db, passwords), await account(db, passwords)
    slug = await write(db, cache, author, "Liked")
    await profiles.follow(db, cache, reader.id, author.username)
    liked = orjson.loads(await articles.favorite(db, cache, reader.id, slug))["article"]
    again = orjson.loads(await articles.favorite(db, cache, reader.id, slug))["article"]  # idempotent
    assert (liked["favorited"], liked["favoritesCount"], again["favoritesCount"]) == (True, 1, 1)
    assert liked["author"]["following"] is True

    shared = orjson.loads((await articles.article_cached(db, cache, slug)).body)["article"]
    assert (shared["favorited"], shared["author"]["following"], shared["favoritesCount"]) == (False, False, 1)
    mine = orjson.loads(await articles.list_for(db, cache, reader.id, ArticleFilters()))["articles"][0]
    assert (mine["favorited"], mine["author"]["following"]) == (True, True)

    unliked = orjson.loads(await articles.unfavorite(db, cache, reader.id, slug))["article"]
    assert (unliked["favorited"], unliked["favoritesCount"]) == (False, 0)


async def test_feed_lists_followed_authors_only(db: Database, cache: Cache, passwords: Passwords) -> None:
    followed, ignored, reader = [await account(db, passwords) for _ in range(3)]
    await write(db, cache, followed, "followed")
    await write(db, cache, ignored, "ignored")
    assert listed(await articles.feed_for(db, reader.id, ArticleFilters())) == ([], 0)
    await profiles.follow(db, cache, reader.id, followed.username)
    feed = orjson.loads(await articles.feed_for(db, reader.id, ArticleFilters()))
    assert [a["title"] for a in feed["articles"]] == ["followed"]
    assert feed["articles"][0]["author"]["following"] is True


async def test_a_profile_change_shows_in_cached_articles(
    db: Database, cache: Cache, passwords: Passwords
) -> None:
    author = await account(db, passwords)
    slug = await write(db, cache, author, "Bio")
    await articles.article_cached(db, cache, slug)
    await users.update(db, cache, passwords, author.id, UpdateUser.model_validate({"bio": "I write"}))
    article = orjson.loads((await articles.article_cached(db, cache, slug)).body)["article"]
    assert article["author"]["bio"] == "I write"


async def test_tags_follow_articles(db: Database, cache: Cache, passwords: Passwords) -> None:
    author = await account(db, passwords)
    slug = await write(db, cache, author, "Tagged", ["popular", "rare"])
    await write(db, cache, author, "Also", ["popular"])
    assert orjson.loads((await tags.tags_cached(db, cache)).body) == {"tags": ["popular", "rare"]}
    await articles.delete(db, cache, author.id, slug)
    assert orjson.loads((await tags.tags_cached(db, cache)).body) == {"tags": ["popular"]}
    changes = UpdateArticle.model_validate({"tagList": []})
    assert (
        orjson.loads(await articles.update(db, cache, author.id, "also", changes))["article"]["tagList"] == []
    )
    assert orjson.loads((await tags.tags_cached(db, cache)).body) == {"tags": []}


async def test_comments_only_their_author_deletes(db: Database, cache: Cache, passwords: Passwords) -> None:
    author, commenter = await account(db, passwords), await account(db, passwords)
    slug = await write(db, cache, author, "Discuss")
    added = orjson.loads(await comments.add(db, cache, commenter.id, slug, NewComment(body="first!")))[
        "comment"
    ]
    listed_comments = orjson.loads(await comments.comments_for(db, None, slug))["comments"]
    assert [c["body"] for c in listed_comments] == ["first!"]
    with pytest.raises(ApiError) as refused:
        await comments.delete(db, cache, author.id, slug, added["id"])
    assert refused.value.status == 403
    await comments.delete(db, cache, commenter.id, slug, added["id"])
    assert orjson.loads(await comments.comments_for(db, None, slug)) == {"comments": []}
    with pytest.raises(ApiError) as missing:
        await comments.delete(db, cache, commenter.id, slug, added["id"])
    assert missing.value.status == 404
