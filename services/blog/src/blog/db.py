"""Named, counted SQL statements against the blog's SQLite database.

Every statement goes through these helpers with a short name, so ``blog_sqlite_queries_total{query}``
says exactly how often SQLite was asked what: the stampede test and the benchmark count cache misses
that reached the database this way, not by guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
from prometheus_client import Counter

__all__ = ["MIGRATIONS", "execute", "execute_many", "fetch_all", "fetch_one", "utc_now"]

MIGRATIONS = Path(__file__).parent / "migrations"

QUERIES = Counter("blog_sqlite_queries_total", "SQL statements sent to SQLite", ["query"])
_children: dict[str, Any] = {}

Params = Sequence[Any]


def _count(query: str) -> None:
    child = _children.get(query)
    if child is None:
        child = _children[query] = QUERIES.labels(query)
    child.inc()


async def fetch_all(conn: aiosqlite.Connection, query: str, sql: str, params: Params = ()) -> list[Any]:
    _count(query)
    return list(await conn.execute_fetchall(sql, params))


async def fetch_one(conn: aiosqlite.Connection, query: str, sql: str, params: Params = ()) -> Any | None:
    rows = await fetch_all(conn, query, sql, params)
    return rows[0] if rows else None


async def execute(conn: aiosqlite.Connection, query: str, sql: str, params: Params = ()) -> tuple[int, int]:
    """Run a write; ``(lastrowid, rowcount)``."""
    _count(query)
    async with conn.execute(sql, params) as cursor:
        return cursor.lastrowid or 0, cursor.rowcount


async def execute_many(conn: aiosqlite.Connection, query: str, sql: str, rows: Sequence[Params]) -> None:
    _count(query)
    await conn.executemany(sql, rows)


def utc_now() -> str:
    """Now as RealWorld timestamps are spelled: ISO 8601, milliseconds, ``Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
