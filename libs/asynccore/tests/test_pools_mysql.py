"""The MySQL pool against the real MariaDB: URL parsing, database life cycle, readiness, gauges."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiomysql
import pytest
from aiohttp import web
from yarl import URL

from asynccore.pools.mysql import (
    MySQLTarget,
    close_mysql,
    drop_database,
    ensure_database,
    mysql_pool,
    open_mysql,
    parse_mysql_url,
)
from asynccore.testing import TcpProxy, wait_until

if TYPE_CHECKING:
    from conftest import PoolGauge, Serve

MYSQL: web.AppKey[Any] = web.AppKey("mysql")


async def database_exists(url: str) -> bool:
    target = parse_mysql_url(url)
    pool = await open_mysql(url.rsplit("/", 1)[0] + "/information_schema", create_database=False, maxsize=1)
    try:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT COUNT(*) FROM SCHEMATA WHERE SCHEMA_NAME = %s", (target.database,))
            (count,) = await cur.fetchone()
            await conn.rollback()
            return bool(count)
    finally:
        await close_mysql(pool)


def via(proxy: TcpProxy, url: str) -> str:
    return str(URL(url).with_host("127.0.0.1").with_port(proxy.port))


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A cuttable path to the shared MariaDB."""
    proxy = TcpProxy("127.0.0.1", 3306)
    await proxy.start()
    yield proxy
    await proxy.close()


def test_parse_mysql_url() -> None:
    assert parse_mysql_url("mysql://root@127.0.0.1:3306/orders") == MySQLTarget(
        "127.0.0.1", 3306, "root", "", "orders"
    )
    assert parse_mysql_url("mysql://app:p%40ss@db.local/shop_2") == MySQLTarget(
        "db.local", 3306, "app", "p@ss", "shop_2"
    )


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@127.0.0.1:3306/",
        "mysql://root@127.0.0.1:3306/bad-name",
        "mysql://root@127.0.0.1:3306/x`; DROP DATABASE mysql; --",
        "mysql://root@127.0.0.1:3306/" + "a" * 65,
        "postgres://root@127.0.0.1/orders",
        "mysql:///orders",
    ],
)
def test_parse_mysql_url_rejects_what_cannot_be_used_safely(url: str) -> None:
    with pytest.raises(ValueError):
        parse_mysql_url(url)


async def test_open_creates_the_database_and_drop_removes_it(mysql_url: str) -> None:
    assert not await database_exists(mysql_url)
    pool = await open_mysql(mysql_url, maxsize=2)
    try:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT DATABASE(), @@autocommit, @@character_set_connection")
            assert await cur.fetchone() == (parse_mysql_url(mysql_url).database, 0, "utf8mb4")
            await conn.rollback()
    finally:
        await close_mysql(pool)
    assert await database_exists(mysql_url)

    await ensure_database(mysql_url)  # idempotent
    await drop_database(mysql_url)
    assert not await database_exists(mysql_url)
    await drop_database(mysql_url)  # idempotent


async def test_lock_wait_timeout_is_set_on_every_pooled_session(mysql_url: str) -> None:
    pool = await open_mysql(mysql_url, maxsize=2, lock_wait_timeout_s=3)
    try:
        async with pool.acquire() as a, pool.acquire() as b:
            for conn in (a, b):
                async with conn.cursor() as cur:
                    await cur.execute("SELECT @@SESSION.innodb_lock_wait_timeout")
                    assert await cur.fetchone() == (3,)
                await conn.rollback()
    finally:
        await close_mysql(pool)
        await drop_database(mysql_url)


async def test_without_create_database_a_missing_database_is_an_error(mysql_url: str) -> None:
    with pytest.raises(aiomysql.OperationalError, match="Unknown database"):
        await open_mysql(mysql_url, create_database=False)


async def test_autocommit_is_off_so_uncommitted_writes_stay_invisible(mysql_url: str) -> None:
    pool = await open_mysql(mysql_url, maxsize=2)
    try:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
        async with pool.acquire() as writer, pool.acquire() as reader:
            async with writer.cursor() as cur:
                await cur.execute("INSERT INTO t VALUES (1)")
            async with reader.cursor() as cur:
                await cur.execute("SELECT COUNT(*) FROM t")
                assert await cur.fetchone() == (0,)
            await reader.rollback()
            await writer.commit()
            async with reader.cursor() as cur:
                await cur.execute("SELECT COUNT(*) FROM t")
                assert await cur.fetchone() == (1,)
            await reader.rollback()
    finally:
        await close_mysql(pool)


async def test_readyz_follows_a_cut_and_a_restore(
    mysql_url: str, proxy: TcpProxy, service: str, serve: Serve
) -> None:
    await ensure_database(mysql_url)
    async with serve(service, mysql_pool(MYSQL, via(proxy, mysql_url), connect_timeout_s=1)) as (_, client):
        assert (await client.get("/readyz")).status == 200

        await proxy.cut()
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert list((await resp.json())["failing"]) == ["mysql"]

        await proxy.restore()

        async def ready() -> bool:
            return (await client.get("/readyz")).status == 200

        await wait_until(ready, timeout=5, message="ready again after restore")


async def test_gauges_show_size_in_use_and_waiting(
    mysql_url: str, service: str, serve: Serve, pool_gauge: PoolGauge
) -> None:
    async with serve(service, mysql_pool(MYSQL, mysql_url, name="orders-db", maxsize=1)) as (app, client):
        pool = app[MYSQL]
        assert await pool_gauge(client, "size", service, "orders-db") == 1
        assert await pool_gauge(client, "in_use", service, "orders-db") == 0

        async with pool.acquire():
            assert await pool_gauge(client, "in_use", service, "orders-db") == 1

            async def acquire() -> Any:
                return await pool.acquire()

            blocked = asyncio.create_task(acquire())

            async def one_waiting() -> bool:
                return await pool_gauge(client, "waiting", service, "orders-db") == 1

            await wait_until(one_waiting, timeout=3)
        conn = await blocked
        pool.release(conn)
        assert await pool_gauge(client, "in_use", service, "orders-db") == 0
        assert await pool_gauge(client, "waiting", service, "orders-db") == 0
