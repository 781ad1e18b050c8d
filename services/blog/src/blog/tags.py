"""The tag list: every tag in use, most used first."""

from __future__ import annotations

import orjson

from blog.articles import TAGS_VERSION
from blog.cache import Cache, Entry
from blog.db import Database, fetch_all

__all__ = ["fetch_tags", "tags_cached"]


async def fetch_tags(db: Database) -> list[str]:
    async with db.read() as conn:
        rows = await fetch_all(
            conn,
            "tag_list",
            "SELECT tag FROM article_tags GROUP BY tag ORDER BY count(*) DESC, tag",
        )
    return [row["tag"] for row in rows]


async def _load_tags(db: Database) -> bytes:
    return orjson.dumps({"tags": await fetch_tags(db)})


async def tags_cached(db: Database, cache: Cache) -> Entry:
    """``{"tags": […]}`` as shared, ready-to-send bytes."""
    return await cache.get("tags", "all", (TAGS_VERSION,), lambda: _load_tags(db))
