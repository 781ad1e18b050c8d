"""Comments on an article: list, add, delete (only by their author).

Comments show on the article's HTML page, so adding or deleting one bumps that article's version.
"""

from __future__ import annotations

from typing import Any

import orjson

from asynccore.errors import ApiError
from blog.articles import article_version
from blog.cache import Cache
from blog.db import Database, Row, execute, fetch_all, fetch_one, utc_now
from blog.inputs import NewComment
from blog.profiles import profile_json
from blog.users import existing_user

__all__ = ["add", "comment_json", "comments_for", "delete", "fetch_comments"]

_SELECT = (
    "SELECT c.id, c.created_at, c.updated_at, c.body, u.username, u.bio, u.image,"
    " EXISTS(SELECT 1 FROM follows WHERE follower_id = ? AND followee_id = c.author_id) AS following"
    " FROM comments c JOIN users u ON u.id = c.author_id"
)


def comment_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
        "body": row["body"],
        "author": profile_json(row["username"], row["bio"], row["image"], bool(row["following"])),
    }


async def _article_id(db: Database, slug: str) -> int:
    async with db.read() as conn:
        row = await fetch_one(conn, "article_id_by_slug", "SELECT id FROM articles WHERE slug = ?", (slug,))
    if row is None:
        raise ApiError(404, "article", "not found")
    return int(row["id"])


async def fetch_comments(db: Database, viewer_id: int | None, slug: str) -> list[dict[str, Any]]:
    """The comments of article ``slug`` in the order they were written; 404 if it does not exist."""
    article_id = await _article_id(db, slug)
    async with db.read() as conn:
        rows = await fetch_all(
            conn,
            "comments_by_article",
            f"{_SELECT} WHERE c.article_id = ? ORDER BY c.id",
            (viewer_id, article_id),
        )
    return [comment_json(row) for row in rows]


async def comments_for(db: Database, viewer_id: int | None, slug: str) -> bytes:
    """``{"comments": […]}`` as ``viewer_id`` sees them (never cached: ``following`` is theirs)."""
    return orjson.dumps({"comments": await fetch_comments(db, viewer_id, slug)})


async def add(db: Database, cache: Cache, author_id: int, slug: str, new: NewComment) -> bytes:
    now = utc_now()
    async with db.write() as conn:
        row = await fetch_one(conn, "article_id_by_slug", "SELECT id FROM articles WHERE slug = ?", (slug,))
        if row is None:
            raise ApiError(404, "article", "not found")
        with existing_user():
            comment_id, _ = await execute(
                conn,
                "comment_insert",
                "INSERT INTO comments (article_id, author_id, body, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (int(row["id"]), author_id, new.body, now, now),
            )
        created = await fetch_one(conn, "comment_by_id", f"{_SELECT} WHERE c.id = ?", (author_id, comment_id))
    assert created is not None  # inserted in this transaction
    await cache.invalidate(article_version(slug))
    return orjson.dumps({"comment": comment_json(created)})


async def delete(db: Database, cache: Cache, user_id: int, slug: str, comment_id: int) -> None:
    """404 unless comment ``comment_id`` is on article ``slug``; 403 unless ``user_id`` wrote it."""
    async with db.write() as conn:
        row = await fetch_one(
            conn,
            "comment_owner",
            "SELECT c.author_id FROM comments c JOIN articles a ON a.id = c.article_id"
            " WHERE c.id = ? AND a.slug = ?",
            (comment_id, slug),
        )
        if row is None:
            raise ApiError(404, "comment", "not found")
        if int(row["author_id"]) != user_id:
            raise ApiError(403, "comment", "forbidden: only its author may delete it")
        await execute(conn, "comment_delete", "DELETE FROM comments WHERE id = ?", (comment_id,))
    await cache.invalidate(article_version(slug))
