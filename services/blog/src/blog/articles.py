"""Articles: read (``fetch_*``, ``*_cached``, ``*_for``), write, and which versions each write bumps.

Version names (see :mod:`blog.versions`): ``a:<slug>`` for one article (its JSON and its page),
``articles`` for everything that lists articles, ``tags`` for the tag list, ``users`` for author
profiles shown inside articles. A write bumps exactly the versions whose readers could see it.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from functools import cache
from typing import Any

import orjson

from asynccore.errors import ApiError
from blog.cache import Cache, Entry, Unshared
from blog.db import Database, Row, Session, execute, execute_many, fetch_all, fetch_one, utc_now
from blog.dialects import SQLITE, Dialect
from blog.inputs import ArticleFilters, NewArticle, UpdateArticle
from blog.overlay import personalize
from blog.profiles import profile_json
from blog.users import USERS_VERSION, existing_user
from blog.viewer_flags import SLUGS_VERSION, flags_version

__all__ = [
    "ARTICLE",
    "ARTICLES_VERSION",
    "LIST",
    "TAGS_VERSION",
    "article_cached",
    "article_for",
    "article_version",
    "create",
    "delete",
    "favorite",
    "feed_for",
    "fetch_article",
    "fetch_page",
    "list_cached",
    "list_for",
    "slugify",
    "unfavorite",
    "update",
]

# Cache families: one article by slug, and list pages by their canonical filters.
ARTICLE = "article"
LIST = "list"
ARTICLES_VERSION = "articles"
TAGS_VERSION = "tags"
LIST_DEPS = (ARTICLES_VERSION, USERS_VERSION)


def article_version(slug: str) -> str:
    return f"a:{slug}"


def article_deps(slug: str) -> tuple[str, ...]:
    return (article_version(slug), USERS_VERSION)


# What an article read selects, by name: the statement and the reader below are built from this one
# list, so a column is read by its name and the two cannot drift apart. The tags are the one column
# whose SQL differs between backends (blog.dialects).
_SELECTED = {
    "id": "a.id",
    "slug": "a.slug",
    "title": "a.title",
    "description": "a.description",
    "body": "a.body",
    "created_at": "a.created_at",
    "updated_at": "a.updated_at",
    "favorites_count": "a.favorites_count",
    "username": "u.username",
    "bio": "u.bio",
    "image": "u.image",
    "tags": "{tags_json}",
}


@cache
def _columns(dialect: Dialect) -> str:
    return ", ".join(
        f"{sql.format(tags_json=dialect.tags_json)} AS {name}" for name, sql in _SELECTED.items()
    )


_COLUMNS = _columns(SQLITE)  # the benchmark's synchronous baseline reads SQLite with it
# Each name's place in a row, mapped once. It reads a database row and a plain tuple alike (the
# benchmark's synchronous baseline has tuples) and costs ~10 % of article_json, sqlite3.Row's own
# lookup by name ~30 % (measured; either is < 1 % of an uncached list read).
_AT = {name: i for i, name in enumerate(_SELECTED)}
_FROM = " FROM articles a JOIN users u ON u.id = a.author_id"


def _not_found() -> ApiError:
    return ApiError(404, "article", "not found")


def article_json(row: Row | tuple[Any, ...], *, with_body: bool = True) -> dict[str, Any]:
    """An article as RealWorld spells it, for nobody in particular (``favorited``/``following`` false).

    ``row`` starts with the columns of ``_columns`` (a database row or a plain tuple).
    """
    at = _AT
    article: dict[str, Any] = {
        "slug": row[at["slug"]],
        "title": row[at["title"]],
        "description": row[at["description"]],
    }
    if with_body:
        article["body"] = row[at["body"]]
    article["tagList"] = orjson.loads(row[at["tags"]])
    article["createdAt"] = row[at["created_at"]]
    article["updatedAt"] = row[at["updated_at"]]
    article["favorited"] = False
    article["favoritesCount"] = row[at["favorites_count"]]
    article["author"] = profile_json(row[at["username"]], row[at["bio"]], row[at["image"]], False)
    return article


# ---------------------------------------------------------------------------- reads


async def fetch_article(db: Database, slug: str) -> dict[str, Any]:
    """One article by slug, body included; 404 if there is none."""
    async with db.read() as conn:
        row = await fetch_one(
            conn, "article_by_slug", f"SELECT {_columns(db.dialect)}{_FROM} WHERE a.slug = ?", (slug,)
        )
    if row is None:
        raise _not_found()
    return article_json(row)


async def _load_article(db: Database, slug: str) -> bytes:
    return orjson.dumps({"article": await fetch_article(db, slug)})


async def article_cached(db: Database, cache: Cache, slug: str) -> Entry:
    """``{"article": …}`` as shared, ready-to-send bytes."""
    return await cache.get(ARTICLE, slug, article_deps(slug), lambda: _load_article(db, slug))


async def article_for(db: Database, cache: Cache, viewer_id: int | None, slug: str) -> bytes:
    """``{"article": …}`` as ``viewer_id`` sees it: the shared bytes with their own flags laid over."""
    entry = cache.peek(ARTICLE, slug) or await article_cached(db, cache, slug)  # a hit: no coroutine
    return await personalize(db, cache, viewer_id, entry.body)


async def _written(db: Database, cache: Cache, writer_id: int, slug: str) -> bytes:
    """What a write answers: the article straight from the database (the next reader fills the cache, once),
    with the writer's flags laid over (their cached entry, current: a favourite bumped it)."""
    return await personalize(db, cache, writer_id, await _load_article(db, slug))


def _filters_sql(filters: ArticleFilters) -> tuple[str, list[Any]]:
    """WHERE clause and parameters; only constant fragments are joined, values are bound."""
    where: list[str] = []
    params: list[Any] = []
    if filters.tag is not None:
        where.append("a.id IN (SELECT article_id FROM article_tags WHERE tag = ?)")
        params.append(filters.tag)
    if filters.author is not None:
        where.append("a.author_id = (SELECT id FROM users WHERE username = ?)")
        params.append(filters.author)
    if filters.favorited is not None:
        where.append(
            "a.id IN (SELECT article_id FROM favorites"
            " WHERE user_id = (SELECT id FROM users WHERE username = ?))"
        )
        params.append(filters.favorited)
    return (" WHERE " + " AND ".join(where) if where else ""), params


async def fetch_page(
    db: Database, filters: ArticleFilters, *, with_body: bool = False
) -> tuple[list[dict[str, Any]], int]:
    """The articles ``filters`` select, newest first (bodies only if asked); and how many match in all.

    One statement: the window count rides along with the page. Only a page past the end (no rows to
    carry it) costs a second, counting statement.
    """
    where, params = _filters_sql(filters)
    columns = _columns(db.dialect)
    sql = f"SELECT {columns}, COUNT(*) OVER () AS total{_FROM}{where} ORDER BY a.id DESC LIMIT ? OFFSET ?"
    async with db.read() as conn:
        rows = await fetch_all(conn, "article_list", sql, (*params, filters.limit, filters.offset))
        if rows:
            total = int(rows[0]["total"])
        elif filters.offset == 0:
            total = 0
        else:
            sql = f"SELECT count(*) AS total{_FROM}{where}"
            counted = await fetch_one(conn, "article_count", sql, params)
            total = int(counted["total"]) if counted else 0
    return [article_json(row, with_body=with_body) for row in rows], total


async def _load_list(db: Database, filters: ArticleFilters) -> bytes:
    articles, total = await fetch_page(db, filters)
    body = orjson.dumps({"articles": articles, "articlesCount": total})
    if not articles:
        # Nothing matched (a made-up tag or author, an offset past the end): cheap to find again, and
        # not worth a key per made-up query in Redis and in every process.
        raise Unshared(body)
    return body


async def list_cached(db: Database, cache: Cache, filters: ArticleFilters) -> Entry:
    """``{"articles": […], "articlesCount": n}`` as shared, ready-to-send bytes."""
    return await cache.get(LIST, filters.key, LIST_DEPS, lambda: _load_list(db, filters))


async def list_for(db: Database, cache: Cache, viewer_id: int | None, filters: ArticleFilters) -> bytes:
    """A list page as ``viewer_id`` sees it: the shared bytes with their own flags laid over."""
    entry = cache.peek(LIST, filters.key) or await list_cached(db, cache, filters)  # a hit: no coroutine
    return await personalize(db, cache, viewer_id, entry.body)


async def feed_for(db: Database, viewer_id: int, filters: ArticleFilters) -> bytes:
    """Articles by authors ``viewer_id`` follows, newest first: personal, so never cached."""
    sql = (
        f"SELECT {_columns(db.dialect)}, COUNT(*) OVER () AS total,"  # noqa: S608
        " EXISTS(SELECT 1 FROM favorites f WHERE f.user_id = ? AND f.article_id = a.id) AS favorited"
        f"{_FROM} WHERE a.author_id IN (SELECT followee_id FROM follows WHERE follower_id = ?)"
        " ORDER BY a.id DESC LIMIT ? OFFSET ?"
    )
    async with db.read() as conn:
        rows = await fetch_all(
            conn, "article_feed", sql, (viewer_id, viewer_id, filters.limit, filters.offset)
        )
    articles = []
    for row in rows:
        article = article_json(row, with_body=False)
        article["favorited"] = bool(row["favorited"])
        article["author"]["following"] = True
        articles.append(article)
    total = int(rows[0]["total"]) if rows else 0
    return orjson.dumps({"articles": articles, "articlesCount": total})


# ---------------------------------------------------------------------------- writes


def slugify(title: str) -> str:
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:96].strip("-") or "article"


async def _free_slug(conn: Session, title: str, article_id: int = 0) -> str:
    """A slug for ``title`` no other article has (inside the write transaction, so it stays free)."""
    base = slug = slugify(title)
    while await fetch_one(
        conn, "slug_taken", "SELECT 1 FROM articles WHERE slug = ? AND id != ?", (slug, article_id)
    ):
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


async def _replace_tags(conn: Session, article_id: int, tags: list[str]) -> None:
    await execute(conn, "tags_delete", "DELETE FROM article_tags WHERE article_id = ?", (article_id,))
    if tags:
        await execute_many(
            conn,
            "tags_insert",
            "INSERT INTO article_tags (article_id, tag) VALUES (?, ?)",
            [(article_id, tag) for tag in tags],
        )


async def create(db: Database, cache: Cache, author_id: int, new: NewArticle) -> bytes:
    now = utc_now()
    with existing_user():
        slug = await _insert(db, author_id, new, now)
    await cache.invalidate(article_version(slug), ARTICLES_VERSION, TAGS_VERSION)
    return await _written(db, cache, author_id, slug)


async def _insert(db: Database, author_id: int, new: NewArticle, now: str) -> str:
    async with db.write() as conn:
        slug = await _free_slug(conn, new.title)
        article_id, _ = await execute(
            conn,
            "article_insert",
            "INSERT INTO articles (slug, title, description, body, author_id, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (slug, new.title, new.description, new.body, author_id, now, now),
        )
        await _replace_tags(conn, article_id, new.tag_list)
    return slug


async def _owned(conn: Session, slug: str, user_id: int) -> int:
    """The id of article ``slug``: 404 if there is none, 403 if ``user_id`` did not write it."""
    row = await fetch_one(conn, "article_owner", "SELECT id, author_id FROM articles WHERE slug = ?", (slug,))
    if row is None:
        raise _not_found()
    if int(row["author_id"]) != user_id:
        raise ApiError(403, "article", "forbidden: only its author may change it")
    return int(row["id"])


async def update(db: Database, cache: Cache, user_id: int, slug: str, changes: UpdateArticle) -> bytes:
    async with db.write() as conn:
        article_id = await _owned(conn, slug, user_id)
        new_slug = await _free_slug(conn, changes.title, article_id) if changes.title is not None else slug
        await execute(
            conn,
            "article_update",
            "UPDATE articles SET slug = ?, title = COALESCE(?, title),"
            " description = COALESCE(?, description), body = COALESCE(?, body), updated_at = ? WHERE id = ?",
            (new_slug, changes.title, changes.description, changes.body, utc_now(), article_id),
        )
        if changes.tag_list is not None:
            await _replace_tags(conn, article_id, changes.tag_list)
    names = {article_version(slug), article_version(new_slug), ARTICLES_VERSION}
    if new_slug != slug:  # the old slug no longer names this article (readers' flags hold slugs)
        names.add(SLUGS_VERSION)
    if changes.tag_list is not None:
        names.add(TAGS_VERSION)
    await cache.invalidate(*sorted(names))
    return await _written(db, cache, user_id, new_slug)


async def delete(db: Database, cache: Cache, user_id: int, slug: str) -> None:
    async with db.write() as conn:
        article_id = await _owned(conn, slug, user_id)
        await execute(conn, "article_delete", "DELETE FROM articles WHERE id = ?", (article_id,))
    await cache.invalidate(article_version(slug), ARTICLES_VERSION, TAGS_VERSION, SLUGS_VERSION)


async def _set_favorite(db: Database, cache: Cache, user_id: int, slug: str, on: bool) -> bytes:
    async with db.write() as conn:
        row = await fetch_one(conn, "article_id_by_slug", "SELECT id FROM articles WHERE slug = ?", (slug,))
        if row is None:
            raise _not_found()
        article_id = int(row["id"])
        if on:
            sql = db.dialect.insert_or_ignore("favorites", ("user_id", "article_id"))
        else:
            sql = "DELETE FROM favorites WHERE user_id = ? AND article_id = ?"
        with existing_user():
            _, changed = await execute(
                conn, "favorite_insert" if on else "favorite_delete", sql, (user_id, article_id)
            )
        if changed:
            await execute(
                conn,
                "favorites_count",
                "UPDATE articles SET favorites_count = favorites_count + ? WHERE id = ?",
                (1 if on else -1, article_id),
            )
    if changed:
        await cache.invalidate(article_version(slug), ARTICLES_VERSION, flags_version(user_id))
    return await _written(db, cache, user_id, slug)


async def favorite(db: Database, cache: Cache, user_id: int, slug: str) -> bytes:
    return await _set_favorite(db, cache, user_id, slug, True)


async def unfavorite(db: Database, cache: Cache, user_id: int, slug: str) -> bytes:
    return await _set_favorite(db, cache, user_id, slug, False)
