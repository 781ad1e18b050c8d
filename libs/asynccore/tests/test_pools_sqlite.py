"""SQLite as one writer plus readers, on real files: WAL, transactions, concurrency, gauges."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiosqlite
import pytest
from aiohttp import web

from asynccore.pools.sqlite import SQLiteDB, sqlite_db
from asynccore.testing import wait_until

if TYPE_CHECKING:
    from conftest import PoolGauge, Serve

DB = web.AppKey("db", SQLiteDB)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteDB]:
    db = await SQLiteDB.open(str(tmp_path / "test.db"), readers=2)
    async with db.write() as conn:
        await conn.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
        await conn.execute("INSERT INTO counter VALUES (1, 0)")
    yield db
    await db.close()


async def fetch_value(conn: aiosqlite.Connection, sql: str) -> object:
    rows = list(await conn.execute_fetchall(sql))
    return rows[0][0]


async def test_connections_are_wal_with_foreign_keys_busy_timeout_and_rows(db: SQLiteDB) -> None:
    async with db.read() as conn:
        assert await fetch_value(conn, "PRAGMA journal_mode") == "wal"
        assert await fetch_value(conn, "PRAGMA foreign_keys") == 1
        assert await fetch_value(conn, "PRAGMA busy_timeout") == 5000
        assert await fetch_value(conn, "PRAGMA synchronous") == 1  # NORMAL
        rows = list(await conn.execute_fetchall("SELECT id, n FROM counter"))
        assert isinstance(rows[0], aiosqlite.Row)
        assert rows[0]["n"] == 0
    async with db.write() as conn:
        assert await fetch_value(conn, "PRAGMA foreign_keys") == 1


async def test_write_commits_on_success_and_rolls_back_on_error(db: SQLiteDB) -> None:
    async with db.write() as conn:
        await conn.execute("UPDATE counter SET n = 5")
    with pytest.raises(RuntimeError, match="abort"):
        async with db.write() as conn:
            await conn.execute("UPDATE counter SET n = 99")
            raise RuntimeError("abort")
    async with db.read() as conn:
        assert await fetch_value(conn, "SELECT n FROM counter") == 5
    # The writer is usable again after a rollback.
    async with db.write() as conn:
        await conn.execute("UPDATE counter SET n = 6")
    async with db.read() as conn:
        assert await fetch_value(conn, "SELECT n FROM counter") == 6


async def test_a_cancelled_writer_leaves_no_open_transaction(db: SQLiteDB) -> None:
    entered = asyncio.Event()

    async def slow_write() -> None:
        async with db.write() as conn:
            await conn.execute("UPDATE counter SET n = 42")
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(slow_write())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.write() as conn:
        assert await fetch_value(conn, "SELECT n FROM counter") == 0


async def test_readers_are_read_only(db: SQLiteDB) -> None:
    async with db.read() as conn:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await conn.execute("UPDATE counter SET n = 1")


async def test_foreign_keys_are_enforced(db: SQLiteDB) -> None:
    async with db.write() as conn:
        await conn.execute("CREATE TABLE child (id INTEGER PRIMARY KEY, counter_id REFERENCES counter(id))")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        async with db.write() as conn:
            await conn.execute("INSERT INTO child VALUES (1, 12345)")


async def test_two_instances_on_one_file_write_concurrently_without_lost_updates(tmp_path: Path) -> None:
    """Read-modify-write with an await in the middle: only serialised transactions keep every increment."""
    path = str(tmp_path / "shared.db")
    first = await SQLiteDB.open(path, readers=2)
    second = await SQLiteDB.open(path, readers=2)
    try:
        async with first.write() as conn:
            await conn.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
            await conn.execute("INSERT INTO counter VALUES (1, 0)")

        async def increment(db: SQLiteDB) -> None:
            async with db.write() as conn:
                n = await fetch_value(conn, "SELECT n FROM counter WHERE id = 1")
                await asyncio.sleep(0)
                # Why the ignore below: fetch_value is typed Any | None: the row exists here.
                await conn.execute("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))  # type: ignore[operator]

        per_db = 60
        await asyncio.gather(*(increment(db) for db in [first, second] * per_db))

        for db in (first, second):
            async with db.read() as conn:
                assert await fetch_value(conn, "SELECT n FROM counter") == 2 * per_db
    finally:
        await first.close()
        await second.close()


async def test_readers_run_alongside_an_open_write_and_see_only_committed_data(db: SQLiteDB) -> None:
    async with db.write() as conn:
        await conn.execute("UPDATE counter SET n = 1")
        async with db.read() as reader:  # WAL: not blocked by the open write transaction
            assert await fetch_value(reader, "SELECT n FROM counter") == 0
    async with db.read() as reader:
        assert await fetch_value(reader, "SELECT n FROM counter") == 1


async def test_app_readiness_and_gauges(
    tmp_path: Path, service: str, serve: Serve, pool_gauge: PoolGauge
) -> None:
    resource = sqlite_db(DB, str(tmp_path / "app.db"), name="blog-db", readers=2)
    async with serve(service, resource) as (app, client):
        assert (await client.get("/readyz")).status == 200
        db = app[DB]
        assert await pool_gauge(client, "size", service, "blog-db") == 3
        assert await pool_gauge(client, "in_use", service, "blog-db") == 0

        async with db.read(), db.write():
            assert await pool_gauge(client, "in_use", service, "blog-db") == 2

            async def write() -> None:
                async with db.write():
                    pass

            waiter = asyncio.create_task(write())

            async def one_waiting() -> bool:
                return await pool_gauge(client, "waiting", service, "blog-db") == 1

            await wait_until(one_waiting, timeout=3)
        await waiter
        assert await pool_gauge(client, "in_use", service, "blog-db") == 0
        assert await pool_gauge(client, "waiting", service, "blog-db") == 0

        await db.close()  # a broken database is reported, named
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert list((await resp.json())["failing"]) == ["blog-db"]


async def test_at_least_one_reader(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="readers"):
        await SQLiteDB.open(str(tmp_path / "x.db"), readers=0)
