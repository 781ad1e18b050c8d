"""The blog on MariaDB/MySQL (``BLOG_DATABASE_URL=mysql://…``): an aiomysql pool behind the seam.

Reads are single autocommit statements on any pooled connection. Writes keep SQLite's guarantee that
one transaction at a time changes the blog: a process queues its own writes on a lock (so waiting
writers do not hold pooled connections the readers need), and the transaction holds a named server
lock (``GET_LOCK``) for the whole database, so replicas on other hosts queue too. The blog's writes
check then write (a free slug, an existing favorite) and lock parent rows through foreign keys; one
writer at a time keeps that free of races and deadlocks, as on SQLite, at SQLite's write concurrency.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomysql
import pymysql

from asynccore.pools.mysql import parse_mysql_url
from blog.db import Duplicate, IntegrityError, MissingReference, Params, Row
from blog.dialects import MARIADB

__all__ = ["MIGRATIONS", "MariaDBDatabase", "MariaDBRow", "MariaDBSession"]

MIGRATIONS = Path(__file__).parent / "migrations" / "mariadb"
# How long a write waits for the writers ahead of it (SQLite's busy timeout is the same 5 s).
WRITE_LOCK_TIMEOUT_S = 5
_DUPLICATE_KEY, _NO_PARENT, _NO_PARENT_OLD = 1062, 1452, 1216
_KEY = re.compile(r"for key '([^']+)'$")
_translated: dict[str, str] = {}


def _pyformat(sql: str) -> str:
    """``?`` placeholders as PyMySQL's ``%s`` (a literal ``%`` doubled); once per statement text."""
    done = _translated.get(sql)
    if done is None:
        done = _translated[sql] = sql.replace("%", "%%").replace("?", "%s")
    return done


def _integrity(exc: pymysql.err.IntegrityError) -> IntegrityError:
    code, message = (*exc.args, None, "")[:2]
    if code in (_NO_PARENT, _NO_PARENT_OLD):
        return MissingReference(str(message))
    if code == _DUPLICATE_KEY:
        # "Duplicate entry '…' for key 'users_by_username_key'": the key, not the entry's text.
        found = _KEY.search(str(message))
        return Duplicate(found.group(1) if found else str(message))
    return IntegrityError(str(message))


class MariaDBRow:
    """A row readable by position and by column name, like ``sqlite3.Row``."""

    __slots__ = ("_at", "_values")

    def __init__(self, at: dict[str, int], values: tuple[Any, ...]) -> None:
        self._at = at
        self._values = values

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._at[key]] if isinstance(key, str) else self._values[key]

    def __len__(self) -> int:
        return len(self._values)


class MariaDBSession:
    __slots__ = ("_conn",)

    def __init__(self, conn: aiomysql.Connection) -> None:
        self._conn = conn

    async def fetch_all(self, sql: str, params: Params) -> Sequence[Row]:
        async with self._conn.cursor() as cur:
            await cur.execute(_pyformat(sql), tuple(params))
            rows = await cur.fetchall()
            if not rows:
                return []
            at = {column[0]: i for i, column in enumerate(cur.description)}
        return [MariaDBRow(at, row) for row in rows]

    async def execute(self, sql: str, params: Params) -> tuple[int, int]:
        try:
            async with self._conn.cursor() as cur:
                await cur.execute(_pyformat(sql), tuple(params))
                return cur.lastrowid or 0, cur.rowcount
        except pymysql.err.IntegrityError as exc:
            raise _integrity(exc) from exc

    async def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        try:
            async with self._conn.cursor() as cur:
                await cur.executemany(_pyformat(sql), [tuple(row) for row in rows])
        except pymysql.err.IntegrityError as exc:
            raise _integrity(exc) from exc


class MariaDBDatabase:
    """``pool`` must be autocommit (``open_mysql(…, autocommit=True)``): reads need no transaction."""

    dialect = MARIADB

    def __init__(self, pool: aiomysql.Pool, url: str) -> None:
        self.pool = pool
        # Lock names are server-wide: one per database, so two blogs (or tests) never queue together.
        self._lock_name = f"blog-writes:{parse_mysql_url(url).database}"
        self._local = asyncio.Lock()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[MariaDBSession]:
        async with self.pool.acquire() as conn:
            yield MariaDBSession(conn)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[MariaDBSession]:
        async with self._local, self.pool.acquire() as conn:
            await self._lock(conn)
            try:
                await conn.begin()
                yield MariaDBSession(conn)
                await conn.commit()
            except BaseException as exc:
                # A cancelled statement leaves the connection mid-reply: closing it is the only safe
                # rollback (the server undoes the transaction and frees the lock); the pool drops it.
                if not conn.closed:
                    if isinstance(exc, Exception):
                        await _rollback_or_close(conn)
                    else:
                        conn.close()
                raise
            finally:
                if not conn.closed:
                    await _unlock(conn, self._lock_name)

    async def _lock(self, conn: aiomysql.Connection) -> None:
        async with conn.cursor() as cur:
            await cur.execute("SELECT GET_LOCK(%s, %s)", (self._lock_name, WRITE_LOCK_TIMEOUT_S))
            (got,) = await cur.fetchone()
        if got != 1:
            raise TimeoutError(f"no write lock on the blog's database within {WRITE_LOCK_TIMEOUT_S} s")

    async def close(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()


async def _rollback_or_close(conn: aiomysql.Connection) -> None:
    try:
        await conn.rollback()
    except (pymysql.err.MySQLError, OSError):
        conn.close()


async def _unlock(conn: aiomysql.Connection, name: str) -> None:
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
    except (pymysql.err.MySQLError, OSError):
        conn.close()  # the server frees a closed session's locks
