"""The viewer's own truth (``favorited``, ``following``) laid over shared cached bytes.

Cached article JSON is the same for everyone: ``favorited`` and ``following`` are ``false`` in it. For
a signed-in reader one indexed query finds which of the articles on the page they favorited and which
authors they follow; when that is none of them (the common case) the cached bytes go out untouched.
"""

from __future__ import annotations

from typing import Any

import orjson

from blog.db import Database, fetch_all

__all__ = ["personalize"]


async def _flags(
    db: Database, viewer_id: int, slugs: list[str], usernames: list[str]
) -> tuple[set[str], set[str]]:
    """(slugs ``viewer_id`` favorited, usernames ``viewer_id`` follows) among those given."""
    async with db.read() as conn:
        rows = await fetch_all(
            conn,
            "viewer_flags",
            # The lists travel as one JSON parameter: a constant statement, whatever their length
            # (the dialect's fragment is constant too).
            "SELECT 'f' AS kind, a.slug AS name FROM favorites f JOIN articles a ON a.id = f.article_id"  # noqa: S608
            f" WHERE f.user_id = ? AND a.slug IN ({db.dialect.json_values})"
            " UNION ALL "
            "SELECT 'u', u.username FROM follows fo JOIN users u ON u.id = fo.followee_id"
            f" WHERE fo.follower_id = ? AND u.username IN ({db.dialect.json_values})",
            (viewer_id, orjson.dumps(slugs).decode(), viewer_id, orjson.dumps(usernames).decode()),
        )
    favorited = {row["name"] for row in rows if row["kind"] == "f"}
    following = {row["name"] for row in rows if row["kind"] == "u"}
    return favorited, following


async def personalize(db: Database, viewer_id: int | None, body: bytes) -> bytes:
    """``body`` (``{"article": …}`` or ``{"articles": […]}``) as ``viewer_id`` should see it."""
    if viewer_id is None:
        return body
    document: dict[str, Any] = orjson.loads(body)
    articles: list[dict[str, Any]] = (
        [document["article"]] if "article" in document else document.get("articles", [])
    )
    if not articles:
        return body
    slugs = sorted({article["slug"] for article in articles})
    usernames = sorted({article["author"]["username"] for article in articles})
    favorited, following = await _flags(db, viewer_id, slugs, usernames)
    if not favorited and not following:
        return body
    for article in articles:
        article["favorited"] = article["slug"] in favorited
        article["author"]["following"] = article["author"]["username"] in following
    return orjson.dumps(document)
