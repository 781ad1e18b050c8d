"""The viewer's own truth (``favorited``, ``following``) laid over shared cached bytes.

Cached article JSON is the same for everyone: ``favorited`` and ``following`` are ``false`` in it. For
a signed-in reader their flags come from their own cache entry (:mod:`blog.viewer_flags`, no SQLite on
a hit); a reader who favourited and follows nobody gets the cached bytes untouched without them being
parsed, and so does one whose flags touch none of the articles shown (the common case). A reader with
too many flags to hold as a set gets one indexed query for the articles on the page.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

import orjson

from asynccore.pools.sqlite import SQLiteDB
from blog.cache import Cache
from blog.db import fetch_all
from blog.viewer_flags import flags_of

__all__ = ["personalize"]


async def _flags(
    db: SQLiteDB, viewer_id: int, slugs: list[str], usernames: list[str]
) -> tuple[set[str], set[str]]:
    """(slugs ``viewer_id`` favorited, usernames ``viewer_id`` follows) among those given."""
    async with db.read() as conn:
        rows = await fetch_all(
            conn,
            "viewer_flags",
            # The lists travel as one JSON parameter: a constant statement, whatever their length.
            "SELECT 'f' AS kind, a.slug AS name FROM favorites f JOIN articles a ON a.id = f.article_id"
            " WHERE f.user_id = ? AND a.slug IN (SELECT value FROM json_each(?))"
            " UNION ALL "
            "SELECT 'u', u.username FROM follows fo JOIN users u ON u.id = fo.followee_id"
            " WHERE fo.follower_id = ? AND u.username IN (SELECT value FROM json_each(?))",
            (viewer_id, orjson.dumps(slugs).decode(), viewer_id, orjson.dumps(usernames).decode()),
        )
    favorited = {row["name"] for row in rows if row["kind"] == "f"}
    following = {row["name"] for row in rows if row["kind"] == "u"}
    return favorited, following


async def personalize(db: SQLiteDB, cache: Cache, viewer_id: int | None, body: bytes) -> bytes:
    """``body`` (``{"article": …}`` or ``{"articles": […]}``) as ``viewer_id`` should see it."""
    if viewer_id is None:
        return body
    flags = await flags_of(db, cache, viewer_id)
    if flags is not None and not flags.favorited and not flags.following:
        return body
    document: dict[str, Any] = orjson.loads(body)
    articles: list[dict[str, Any]] = (
        [document["article"]] if "article" in document else document.get("articles", [])
    )
    if not articles:
        return body
    slugs = {article["slug"] for article in articles}
    usernames = {article["author"]["username"] for article in articles}
    favorited: AbstractSet[str]
    following: AbstractSet[str]
    if flags is None:
        favorited, following = await _flags(db, viewer_id, sorted(slugs), sorted(usernames))
    else:
        favorited, following = flags.favorited & slugs, flags.following & usernames
    if not favorited and not following:
        return body
    for article in articles:
        article["favorited"] = article["slug"] in favorited
        article["author"]["following"] = article["author"]["username"] in following
    return orjson.dumps(document)
