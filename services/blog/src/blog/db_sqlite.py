"""The blog on SQLite (the default): asynccore's one-writer, many-readers WAL pool behind the seam."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from asynccore.pools.sqlite import SQLiteDB
from blog.db import Duplicate, IntegrityError, MissingReference, Params, Row
from blog.dialects import SQLITE

__all__ = ["MIGRATIONS", "SQLiteDatabase", "SQLiteSession", "sqlite_path"]

MIGRATIONS = Path(__file__).parent / "migrations" / "sqlite"
_UNIQUE = "UNIQUE constraint failed: "


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:///path`` URL names (``sqlite:////abs/x.db`` is absolute)."""
    return url.removeprefix("sqlite:///")


def _integrity(exc: sqlite3.IntegrityError) -> IntegrityError:
    message = str(exc)
    if "FOREIGN KEY" in message:
        return MissingReference(message)
    if message.startswith(_UNIQUE):
        return Duplicate(message.removeprefix(_UNIQUE))
    return IntegrityError(message)


class SQLiteSession:
    __slots__ = ("_conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch_all(self, sql: str, params: Params) -> Sequence[Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def execute(self, sql: str, params: Params) -> tuple[int, int]:
        try:
            async with self._conn.execute(sql, params) as cursor:
                return cursor.lastrowid or 0, cursor.rowcount
        except sqlite3.IntegrityError as exc:
            raise _integrity(exc) from exc

    async def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        try:
            await self._conn.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise _integrity(exc) from exc


class SQLiteDatabase:
    """Reads on the reader connections, writes on the one writer (``BEGIN IMMEDIATE``)."""

    dialect = SQLITE

    def __init__(self, db: SQLiteDB) -> None:
        self.pool = db

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SQLiteSession]:
        async with self.pool.read() as conn:
            yield SQLiteSession(conn)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SQLiteSession]:
        async with self.pool.write() as conn:
            yield SQLiteSession(conn)

    async def close(self) -> None:
        await self.pool.close()
