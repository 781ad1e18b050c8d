"""SQLite (aiosqlite) as one writer plus a pool of readers, in WAL mode.

SQLite allows one writer at a time per file. Funnelling this process's writes through one connection
behind an ``asyncio.Lock`` turns contention into a cheap in-process queue, and ``BEGIN IMMEDIATE``
takes the file's write lock at the start of the transaction, so a writer in another process makes us
wait (``busy_timeout``) instead of failing half-way with "database is locked". WAL lets the readers
run alongside the writer and see every committed write. Each connection has its own thread
(aiosqlite), so a busy wait never blocks the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosqlite
from aiohttp import web

from asynccore.app import CleanupCtx, add_readiness_check
from asynccore.pools import PoolStats, track_pool, untrack_pool

__all__ = ["SQLiteDB", "sqlite_db"]


async def _connect(path: str, busy_timeout_ms: int, *, query_only: bool) -> aiosqlite.Connection:
    # isolation_level=None: no implicit BEGIN from the sqlite3 module; write() issues its own.
    conn = await aiosqlite.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    await conn.execute("PRAGMA foreign_keys = ON")
    await conn.execute("PRAGMA synchronous = NORMAL")
    if query_only:
        await conn.execute("PRAGMA query_only = ON")
    return conn


class SQLiteDB:
    """One writer connection and ``readers`` reader connections on one database file."""

    def __init__(self, writer: aiosqlite.Connection, readers: list[aiosqlite.Connection]) -> None:
        self._writer = writer
        self._write_lock = asyncio.Lock()
        self._all_readers = readers
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for reader in readers:
            self._readers.put_nowait(reader)
        self._waiting = 0

    @classmethod
    async def open(cls, path: str, *, readers: int = 4, busy_timeout_ms: int = 5000) -> SQLiteDB:
        """Open ``path`` (created if missing) in WAL mode with ``readers`` reader connections."""
        if readers < 1:
            raise ValueError(f"readers must be at least 1, got {readers}")
        writer = await _connect(path, busy_timeout_ms, query_only=False)
        opened: list[aiosqlite.Connection] = []
        try:
            # WAL is a property of the file; setting it waits out other openers via busy_timeout.
            async with writer.execute("PRAGMA journal_mode = WAL") as cur:
                row = await cur.fetchone()
            if row is None or str(row[0]).lower() != "wal":
                raise RuntimeError(f"{path}: could not switch to WAL (journal_mode={row and row[0]})")
            for _ in range(readers):
                opened.append(await _connect(path, busy_timeout_ms, query_only=True))
        except BaseException:
            for conn in [writer, *opened]:
                await conn.close()
            raise
        return cls(writer, opened)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """A reader connection (read-only: ``PRAGMA query_only``), back to the pool on exit."""
        self._waiting += 1
        try:
            conn = await self._readers.get()
        finally:
            self._waiting -= 1
        try:
            yield conn
        finally:
            if conn.in_transaction:  # the caller opened a snapshot and left it open
                await conn.rollback()
            self._readers.put_nowait(conn)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """The writer, inside ``BEGIN IMMEDIATE``; COMMIT on success, ROLLBACK on any exception."""
        self._waiting += 1
        try:
            await self._write_lock.acquire()
        finally:
            self._waiting -= 1
        try:
            conn = self._writer
            try:
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
                await conn.commit()
            except BaseException:
                # rollback() is a no-op outside a transaction, so this is safe whatever failed; and
                # aiosqlite runs calls in order, so a BEGIN whose await was cancelled is undone too.
                await conn.rollback()
                raise
        finally:
            self._write_lock.release()

    def stats(self) -> PoolStats:
        readers = len(self._all_readers)
        return PoolStats(
            size=readers + 1,
            in_use=readers - self._readers.qsize() + int(self._write_lock.locked()),
            waiting=self._waiting,
        )

    async def close(self) -> None:
        for conn in [self._writer, *self._all_readers]:
            await conn.close()


def sqlite_db(key: web.AppKey[SQLiteDB], path: str, *, name: str = "sqlite", readers: int = 4) -> CleanupCtx:
    """A ``cleanup_ctx``: ``app[key]`` is the database; ``/readyz`` fails as ``name`` when unreadable."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        db = await SQLiteDB.open(path, readers=readers)
        app[key] = db

        async def probe() -> None:
            async with db.read() as conn:
                await conn.execute_fetchall("SELECT 1")

        add_readiness_check(app, name, probe)
        track_pool(app, name, db, SQLiteDB.stats)
        try:
            yield
        finally:
            untrack_pool(db)
            await db.close()

    return ctx
