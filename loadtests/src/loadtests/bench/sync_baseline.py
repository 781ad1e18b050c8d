"""The synchronous baseline the async blog is compared with: Flask (WSGI) under gunicorn sync workers.

It serves the two anonymous reads the benchmark drives — ``GET /api/articles`` (the newest-first list)
and ``GET /api/articles/<slug>`` — from the blog's SQLite file, with the blog's own SQL text and the
blog's own row-to-JSON function, serialised with orjson like the blog. Nothing is cached: every request
runs its statement, as the blog does with ``BLOG_CACHE_ENABLED=false``. What differs is only the
serving model: one blocking request per process at a time, with a plain ``sqlite3`` connection per
process (opened after gunicorn forks), instead of an event loop with aiosqlite reader threads.

Run it as the benchmark does (``BLOG_DB_PATH`` names the database, like the blog)::

    BLOG_DB_PATH=/tmp/blog.db gunicorn -w 1 --worker-class sync -b 127.0.0.1:8091 \\
        'loadtests.bench.sync_baseline:app_from_env()'
"""

from __future__ import annotations

import os
import sqlite3
import sys
from typing import Any

import orjson
from flask import Flask, Response, request

# The blog keeps the column list, the join and the row → JSON mapping as module constants and a plain
# function; its statements are assembled inside its async readers, so they are assembled here the
# same way from the same parts (see fetch_article / fetch_page in blog.articles).
from blog.articles import _COLUMNS, _FROM, article_json
from blog.inputs import MAX_LIMIT

__all__ = ["ARTICLE_BY_SLUG_SQL", "ARTICLE_PAGE_SQL", "app_from_env", "create_app", "gunicorn_argv"]

ARTICLE_BY_SLUG_SQL = f"SELECT {_COLUMNS}{_FROM} WHERE a.slug = ?"
ARTICLE_PAGE_SQL = f"SELECT {_COLUMNS}, COUNT(*) OVER () {_FROM} ORDER BY a.id DESC LIMIT ? OFFSET ?"
ARTICLE_COUNT_SQL = f"SELECT count(*){_FROM}"

BUSY_TIMEOUT_MS = 5000
JSON = "application/json"


def _connect(path: str) -> sqlite3.Connection:
    """A read-only connection set up like the blog's reader pool (asynccore.pools.sqlite)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA query_only = ON")
    return conn


def _error(status: int, field: str, message: str) -> Response:
    return Response(orjson.dumps({"errors": {field: [message]}}), status=status, content_type=JSON)


def _int_arg(name: str, default: int, low: int, high: int | None) -> int | Response:
    raw = request.args.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return _error(422, name, "must be an integer")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        return _error(422, name, f"must be {bound}")
    return value


def create_app(db_path: str) -> Flask:
    """The baseline app on ``db_path``; its connection opens on first use, in the serving process."""
    app = Flask("sync_baseline")
    connection: list[sqlite3.Connection] = []

    def db() -> sqlite3.Connection:
        if not connection:
            connection.append(_connect(db_path))
        return connection[0]

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', content_type=JSON)

    @app.get("/api/articles")
    def list_articles() -> Response:
        limit = _int_arg("limit", 20, 1, MAX_LIMIT)
        offset = _int_arg("offset", 0, 0, None)
        if isinstance(limit, Response):
            return limit
        if isinstance(offset, Response):
            return offset
        rows: list[Any] = db().execute(ARTICLE_PAGE_SQL, (limit, offset)).fetchall()
        if rows:
            total = int(rows[0][12])
        elif offset == 0:
            total = 0
        else:
            total = int(db().execute(ARTICLE_COUNT_SQL).fetchone()[0])
        articles = [article_json(row, with_body=False) for row in rows]
        return Response(orjson.dumps({"articles": articles, "articlesCount": total}), content_type=JSON)

    @app.get("/api/articles/<slug>")
    def get_article(slug: str) -> Response:
        row = db().execute(ARTICLE_BY_SLUG_SQL, (slug,)).fetchone()
        if row is None:
            return _error(404, "article", "not found")
        return Response(orjson.dumps({"article": article_json(row)}), content_type=JSON)

    return app


def app_from_env() -> Flask:
    """gunicorn's entry point: the database is ``BLOG_DB_PATH``, as for the blog."""
    return create_app(os.environ["BLOG_DB_PATH"])


def gunicorn_argv(port: int, workers: int) -> list[str]:
    """The command the benchmark runs (and prints): ``workers`` sync worker processes on loopback."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        f"--workers={workers}",
        "--worker-class=sync",
        f"--bind=127.0.0.1:{port}",
        "--backlog=2048",
        "--log-level=warning",
        "loadtests.bench.sync_baseline:app_from_env()",
    ]
