"""A reader's cached flags (blog.viewer_flags), against each backend and Redis: current after the reader's
own writes, no SQLite on a hit, names that change hands never claimed, Redis down, two replicas."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from blog_testing import MakeCache
from prometheus_client import REGISTRY

from asynccore.resilience import CircuitBreaker
from asynccore.testing import RedisServer, wait_until
from blog import articles, overlay, profiles, users, viewer_flags
from blog.cache import Cache
from blog.db import Database
from blog.inputs import ArticleFilters, NewArticle, NewUser, UpdateArticle, UpdateUser
from blog.passwords import Passwords
from blog.viewer_flags import FAMILY, NO_FLAGS, Flags, flags_of


async def account(db: Database, passwords: Passwords) -> users.Account:
    name = f"v{uuid.uuid4().hex[:10]}"
    new = NewUser.model_validate({"username": name, "email": f"{name}@example.com", "password": "password"})
    return await users.register(db, passwords, new)


async def write(db: Database, cache: Cache, author: users.Account, title: str) -> str:
    new = NewArticle.model_validate({"title": title, "description": "d", "body": "b"})
    return str(orjson.loads(await articles.create(db, cache, author.id, new))["article"]["slug"])


async def seen(db: Database, cache: Cache, viewer_id: int, slug: str) -> dict[str, Any]:
    article: dict[str, Any] = orjson.loads(await articles.article_for(db, cache, viewer_id, slug))["article"]
    return article


def queries(name: str) -> float:
    return REGISTRY.get_sample_value("blog_db_queries_total", {"query": name}) or 0.0


async def test_flags_follow_the_readers_own_writes_at_once(
    db: Database, cache: Cache, passwords: Passwords
) -> None:
    author, reader = await account(db, passwords), await account(db, passwords)
    slug = await write(db, cache, author, "Liked")
    assert await flags_of(db, cache, reader.id) is NO_FLAGS  # nothing to parse

    await articles.favorite(db, cache, reader.id, slug)
    assert await flags_of(db, cache, reader.id) == Flags(frozenset({slug}), frozenset())
    await profiles.follow(db, cache, reader.id, author.username)
    assert await flags_of(db, cache, reader.id) == Flags(frozenset({slug}), frozenset({author.username}))
    article = await seen(db, cache, reader.id, slug)
    assert (article["favorited"], article["author"]["following"], article["favoritesCount"]) == (
        True,
        True,
        1,
    )

    await articles.unfavorite(db, cache, reader.id, slug)
    await profiles.unfollow(db, cache, reader.id, author.username)
    assert await flags_of(db, cache, reader.id) == Flags(frozenset(), frozenset())
    article = await seen(db, cache, reader.id, slug)
    assert (article["favorited"], article["author"]["following"], article["favoritesCount"]) == (
        False,
        False,
        0,
    )


async def test_a_hit_asks_sqlite_nothing(db: Database, cache: Cache, passwords: Passwords) -> None:
    author, reader = await account(db, passwords), await account(db, passwords)
    slug = await write(db, cache, author, "Once")
    await articles.favorite(db, cache, reader.id, slug)
    await flags_of(db, cache, reader.id)  # fills the entry
    before = queries("viewer_favorites"), queries("viewer_follows"), queries("viewer_flags")
    for _ in range(5):
        assert (await seen(db, cache, reader.id, slug))["favorited"] is True
    assert (queries("viewer_favorites"), queries("viewer_follows"), queries("viewer_flags")) == before
    assert cache.peek(FAMILY, str(reader.id)) is not None  # a hit without an await


async def test_a_slug_that_changes_hands_is_not_claimed(
    db: Database, cache: Cache, passwords: Passwords
) -> None:
    author, reader = await account(db, passwords), await account(db, passwords)
    renamed = await write(db, cache, author, "First")
    deleted = await write(db, cache, author, "Second")
    for slug in (renamed, deleted):
        await articles.favorite(db, cache, reader.id, slug)
    assert (await flags_of(db, cache, reader.id)) == Flags(frozenset({renamed, deleted}), frozenset())

    new_slug = orjson.loads(
        await articles.update(db, cache, author.id, renamed, UpdateArticle.model_validate({"title": "Moved"}))
    )["article"]["slug"]
    await articles.delete(db, cache, author.id, deleted)
    # New articles take the freed slugs: the reader favourited neither.
    assert await write(db, cache, author, "First") == renamed
    assert await write(db, cache, author, "Second") == deleted
    assert [(await seen(db, cache, reader.id, slug))["favorited"] for slug in (renamed, deleted)] == [
        False
    ] * 2
    assert (await seen(db, cache, reader.id, new_slug))["favorited"] is True


async def test_a_renamed_author_is_still_followed(db: Database, cache: Cache, passwords: Passwords) -> None:
    author, reader = await account(db, passwords), await account(db, passwords)
    slug = await write(db, cache, author, "By a renamer")
    await profiles.follow(db, cache, reader.id, author.username)
    assert (await seen(db, cache, reader.id, slug))["author"]["following"] is True
    new_name = f"r{uuid.uuid4().hex[:10]}"
    await users.update(db, cache, passwords, author.id, UpdateUser.model_validate({"username": new_name}))
    article = await seen(db, cache, reader.id, slug)
    assert (article["author"]["username"], article["author"]["following"]) == (new_name, True)


async def test_a_reader_with_too_many_flags_is_asked_per_page(
    db: Database, cache: Cache, passwords: Passwords, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(viewer_flags, "MAX_NAMES", 1)
    author, reader = await account(db, passwords), await account(db, passwords)
    slugs = [await write(db, cache, author, f"Many {i}") for i in range(3)]
    for slug in slugs[:2]:
        await articles.favorite(db, cache, reader.id, slug)
    assert await flags_of(db, cache, reader.id) is None
    before = queries("viewer_flags")
    page = orjson.loads(await articles.list_for(db, cache, reader.id, ArticleFilters()))["articles"]
    assert {a["slug"]: a["favorited"] for a in page} == {slugs[0]: True, slugs[1]: True, slugs[2]: False}
    assert queries("viewer_flags") == before + 1  # the per-page query


async def test_redis_down_the_flags_come_from_sqlite(
    private_redis: RedisServer, make_cache: MakeCache, db: Database, passwords: Passwords
) -> None:
    breaker = CircuitBreaker(f"test-{uuid.uuid4().hex[:8]}", failure_threshold=2, reset_after_s=0.3)
    cache = await make_cache(private_redis.url, breaker=breaker)
    author, reader = await account(db, passwords), await account(db, passwords)
    slug = await write(db, cache, author, "Outage")
    assert (await seen(db, cache, reader.id, slug))["favorited"] is False  # cached: not favourited

    await private_redis.stop()
    await wait_until(lambda: not cache.versions.connected.is_set(), timeout=5, message="channel noticed")
    await articles.favorite(db, cache, reader.id, slug)  # commits; the bump cannot reach Redis
    article = await seen(db, cache, reader.id, slug)
    assert (article["favorited"], article["favoritesCount"]) == (True, 1)
    await profiles.follow(db, cache, reader.id, author.username)
    assert (await seen(db, cache, reader.id, slug))["author"]["following"] is True

    await private_redis.start()
    await wait_until(cache.versions.connected.is_set, timeout=10, message="channel reconnected")
    article = await seen(db, cache, reader.id, slug)
    assert (article["favorited"], article["author"]["following"], article["favoritesCount"]) == (
        True,
        True,
        1,
    )


async def test_the_other_replica_drops_its_copy_on_the_push(
    make_cache: MakeCache, db: Database, passwords: Passwords
) -> None:
    a, b = await make_cache(), await make_cache()
    author, reader = await account(db, passwords), await account(db, passwords)
    slug = await write(db, a, author, "Two replicas")
    assert (await seen(db, b, reader.id, slug))["favorited"] is False  # b holds the reader's flags
    await articles.favorite(db, a, reader.id, slug)
    assert (await seen(db, a, reader.id, slug))["favorited"] is True  # the writing replica: at once

    async def b_sees_it() -> bool:
        article = await seen(db, b, reader.id, slug)
        return bool(article["favorited"]) and article["favoritesCount"] == 1

    # Redis queued b's invalidation before it answered a's bump; b applies it on its next loop turn.
    await wait_until(b_sees_it, timeout=1, message="the other replica shows the reader's favourite")


async def test_flags_that_touch_nothing_shown_send_the_cached_bytes(
    db: Database, cache: Cache, passwords: Passwords
) -> None:
    author, reader = await account(db, passwords), await account(db, passwords)
    elsewhere = await write(db, cache, author, "Not on the page")
    await articles.favorite(db, cache, reader.id, elsewhere)
    other = await account(db, passwords)
    slug = await write(db, cache, other, "On the page")
    shared = (await articles.article_cached(db, cache, slug)).body
    assert await articles.article_for(db, cache, reader.id, slug) is shared  # untouched, not re-encoded
    assert overlay.shown_in(shared) is overlay.shown_in(shared)  # read once per answer
    assert overlay.shown_in(shared).slugs == {slug}
    assert overlay.shown_in(shared).usernames == {other.username}


def test_what_answers_show_is_remembered_within_its_bound() -> None:
    bodies = [
        orjson.dumps(
            {
                "articles": [
                    {"slug": f"s{i}-{j}", "author": {"username": f"u{j}"}, "body": "x" * 2000}
                    for j in range(50)
                ]
            }
        )
        for i in range(100)
    ]  # ~100 KB each: 10 MB in all, past the 8 MB bound
    for body in bodies:
        assert len(overlay.shown_in(body).slugs) == 50
    assert overlay._SHOWN.currsize <= overlay.SHOWN_MAX_BYTES
    assert overlay.shown_in(bodies[-1]) is overlay.shown_in(bodies[-1])


def _reencoded(body: bytes, favorited: set[str], following: set[str]) -> bytes:
    """The flags laid over by parsing and encoding again: what the byte-level overlay must equal."""
    document = orjson.loads(body)
    for article in document["articles"]:
        article["favorited"] = article["slug"] in favorited
        article["author"]["following"] = article["author"]["username"] in following
    return orjson.dumps(document)


def test_flags_are_set_in_the_bytes_exactly_as_a_re_encoding_would() -> None:
    tricky = 'says "favorited":false and "following":false, ünïcode ✓, a \\ backslash'
    articles = [
        {
            "slug": f"s{j}",
            "title": tricky,
            "description": tricky,
            "tagList": ["favorited", "false"],
            "favorited": False,
            "favoritesCount": j,
            "author": {"username": f"u{j % 3}", "bio": tricky, "image": None, "following": False},
        }
        for j in range(7)
    ]
    body = orjson.dumps({"articles": articles, "articlesCount": 7})
    places = overlay.shown_in(body).places
    assert places is not None and [p.slug for p in places] == [f"s{j}" for j in range(7)]
    for favorited, following in [
        ({"s0"}, set()),
        (set(), {"u1"}),
        ({"s2", "s6"}, {"u0", "u2"}),
        (set(), set()),
    ]:
        assert overlay._flipped(body, places, favorited, following) == _reencoded(body, favorited, following)


def test_an_answer_without_one_flag_per_article_is_re_encoded() -> None:
    body = orjson.dumps({"articles": [{"slug": "s", "author": {"username": "u"}}]})
    assert overlay.shown_in(body).places is None  # personalize then parses and encodes it


def test_parsed_flags_are_remembered_by_their_bytes_within_a_bound() -> None:
    body = orjson.dumps({"favorited": ["a", "b"], "following": ["u"]})
    flags = viewer_flags.parsed(body)
    assert flags == Flags(frozenset({"a", "b"}), frozenset({"u"}))
    assert viewer_flags.parsed(body) is flags  # parsed once
    many = [
        orjson.dumps({"favorited": [f"slug-{i}-{j}" for j in range(1000)], "following": []})
        for i in range(200)
    ]  # ~2 MB of bytes, ~7 MB by the memo's reckoning: past its 4 MB
    for each in many:
        assert len(viewer_flags.parsed(each).favorited) == 1000
    assert viewer_flags._PARSED.currsize <= viewer_flags.PARSED_MAX_BYTES
