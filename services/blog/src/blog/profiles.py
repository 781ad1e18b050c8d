"""Profiles: a user as others see them, and following.

Following is per-viewer, so it is never part of anything cached: responses carry ``following: false``
in the shared bytes and the viewer's truth is laid over them per request (see :mod:`blog.overlay`).
"""

from __future__ import annotations

from typing import Any

import orjson

from asynccore.errors import ApiError
from blog.cache import Cache
from blog.db import Database, execute, fetch_one
from blog.users import existing_user
from blog.viewer_flags import flags_version

__all__ = ["fetch_profile", "follow", "profile_for", "profile_json", "unfollow", "user_id_of"]


def profile_json(username: str, bio: str | None, image: str | None, following: bool) -> dict[str, Any]:
    # The spec types bio and image as strings: an unset one is "", never null.
    return {"username": username, "bio": bio or "", "image": image or "", "following": following}


def _not_found() -> ApiError:
    return ApiError(404, "profile", "not found")


async def user_id_of(db: Database, username: str) -> int:
    async with db.read() as conn:
        row = await fetch_one(
            conn, "user_id_by_username", "SELECT id FROM users WHERE username = ?", (username,)
        )
    if row is None:
        raise _not_found()
    return int(row["id"])


async def fetch_profile(db: Database, viewer_id: int | None, username: str) -> dict[str, Any]:
    """``username``'s profile as ``viewer_id`` (or an anonymous reader) sees it; 404 if unknown."""
    async with db.read() as conn:
        row = await fetch_one(
            conn,
            "profile_by_username",
            "SELECT u.username, u.bio, u.image,"
            " EXISTS(SELECT 1 FROM follows WHERE follower_id = ? AND followee_id = u.id) AS following"
            " FROM users u WHERE u.username = ?",
            (viewer_id, username),
        )
    if row is None:
        raise _not_found()
    return profile_json(row["username"], row["bio"], row["image"], bool(row["following"]))


async def profile_for(db: Database, viewer_id: int | None, username: str) -> bytes:
    """``{"profile": …}`` as ``viewer_id`` sees it (never cached: ``following`` is theirs)."""
    return orjson.dumps({"profile": await fetch_profile(db, viewer_id, username)})


async def follow(db: Database, cache: Cache, follower_id: int, username: str) -> bytes:
    followee_id = await user_id_of(db, username)
    with existing_user():
        await _follow(db, follower_id, followee_id)
    await cache.invalidate(flags_version(follower_id))  # their cached flags (blog.viewer_flags)
    return await profile_for(db, follower_id, username)


async def _follow(db: Database, follower_id: int, followee_id: int) -> None:
    async with db.write() as conn:
        await execute(
            conn,
            "follow",
            db.dialect.insert_or_ignore("follows", ("follower_id", "followee_id")),
            (follower_id, followee_id),
        )


async def unfollow(db: Database, cache: Cache, follower_id: int, username: str) -> bytes:
    followee_id = await user_id_of(db, username)
    async with db.write() as conn:
        await execute(
            conn,
            "unfollow",
            "DELETE FROM follows WHERE follower_id = ? AND followee_id = ?",
            (follower_id, followee_id),
        )
    await cache.invalidate(flags_version(follower_id))
    return await profile_for(db, follower_id, username)
