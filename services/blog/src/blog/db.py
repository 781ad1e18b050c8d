"""The blog's storage seam: a :class:`Database` (SQLite or MariaDB) and named, counted statements.

Every statement goes through these helpers with a short name, so ``blog_db_queries_total{query}``
says exactly how often the database was asked what, whichever backend (dashboards, alerts and the
benchmark read it): the stampede test and the benchmark count cache misses that reached the database
this way, not by guessing.

The backends (:mod:`blog.db_sqlite`, :mod:`blog.db_mariadb`) give the same rows (read by index or by
name), the same write transaction (one writer at a time, all or nothing) and the same integrity
errors (:class:`Duplicate`, :class:`MissingReference`), so nothing above this module knows which one
it talks to; SQL that differs is in :mod:`blog.dialects`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Counter

from blog.dialects import Dialect

__all__ = [
    "Database",
    "Duplicate",
    "IntegrityError",
    "MissingReference",
    "Row",
    "Session",
    "execute",
    "execute_many",
    "fetch_all",
    "fetch_one",
    "utc_now",
]

QUERIES = Counter("blog_db_queries_total", "SQL statements sent to the blog's database", ["query"])
_children: dict[str, Any] = {}

Params = Sequence[Any]


class Row(Protocol):
    """A result row: ``row[0]`` or ``row["slug"]``."""

    def __getitem__(self, key: Any, /) -> Any: ...


class Session(Protocol):
    """One connection inside :meth:`Database.read` or :meth:`Database.write`."""

    async def fetch_all(self, sql: str, params: Params) -> Sequence[Row]: ...

    async def execute(self, sql: str, params: Params) -> tuple[int, int]: ...

    async def execute_many(self, sql: str, rows: Sequence[Params]) -> None: ...


class Database(Protocol):
    dialect: Dialect

    def read(self) -> AbstractAsyncContextManager[Session]:
        """A connection that sees every committed write."""
        ...

    def write(self) -> AbstractAsyncContextManager[Session]:
        """A transaction, committed on exit and rolled back on any exception; one at a time, across
        every process on the database, so a check-then-write inside it cannot race."""
        ...

    async def close(self) -> None: ...


class IntegrityError(Exception):
    """A write the schema refused."""


class Duplicate(IntegrityError):
    """A row with the same unique key exists; ``key`` names the key (``users.username_key`` …)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class MissingReference(IntegrityError):
    """A foreign key names a row that does not exist (any more)."""


def _count(query: str) -> None:
    child = _children.get(query)
    if child is None:
        child = _children[query] = QUERIES.labels(query)
    child.inc()


async def fetch_all(conn: Session, query: str, sql: str, params: Params = ()) -> Sequence[Row]:
    _count(query)
    return await conn.fetch_all(sql, params)


async def fetch_one(conn: Session, query: str, sql: str, params: Params = ()) -> Row | None:
    rows = await fetch_all(conn, query, sql, params)
    return rows[0] if rows else None


async def execute(conn: Session, query: str, sql: str, params: Params = ()) -> tuple[int, int]:
    """Run a write; ``(lastrowid, rowcount)``."""
    _count(query)
    return await conn.execute(sql, params)


async def execute_many(conn: Session, query: str, sql: str, rows: Sequence[Params]) -> None:
    _count(query)
    await conn.execute_many(sql, rows)


def utc_now() -> str:
    """Now as RealWorld timestamps are spelled: ISO 8601, milliseconds, ``Z``. Both backends store
    this text as it is, so a date reads back byte for byte and sorts as time does."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
