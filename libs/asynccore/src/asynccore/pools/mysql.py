"""MySQL/MariaDB (aiomysql) from a URL such as ``mysql://root@127.0.0.1:3306/orders``.

Connections have autocommit off: a unit of work is explicit (``await conn.begin()`` … ``commit()``),
and aiomysql discards a connection that is returned mid-transaction, so a forgotten commit cannot
leak locks into the next caller. It does *not* notice an open read-only transaction, so end reads
with ``commit()`` too: otherwise the REPEATABLE READ snapshot goes back to the pool and the next
borrower reads stale rows. aiomysql has no read timeout: callers bound each query with
``asyncio.timeout`` (the app's per-request deadline does it for handlers).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiomysql
import pymysql
from aiohttp import web
from yarl import URL

from asynccore.app import EDGE, CleanupCtx, add_readiness_check
from asynccore.pools import PoolStats, track_pool, untrack_pool

__all__ = [
    "MySQLTarget",
    "close_mysql",
    "drop_database",
    "ensure_database",
    "mysql_pool",
    "open_mysql",
    "parse_mysql_url",
]

# Identifiers cannot be bound as query parameters, so a database name is allowed only if it needs no
# quoting at all.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_CLOSE_TIMEOUT_S = 5.0
# CREATE/DROP DATABASE wait for metadata locks held by open transactions; never forever.
_DDL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class MySQLTarget:
    host: str
    port: int
    user: str
    password: str
    database: str


def parse_mysql_url(url: str) -> MySQLTarget:
    """Split ``mysql://user[:password]@host[:port]/database``; ``ValueError`` if it is not one."""
    parsed = URL(url)
    database = parsed.path.lstrip("/")
    if parsed.scheme != "mysql" or not parsed.host:
        raise ValueError(f"not a mysql:// URL with a host: {parsed.with_password(None)}")
    if not _SAFE_NAME.fullmatch(database):
        raise ValueError(f"database name must match [A-Za-z0-9_]+, got {database!r}")
    return MySQLTarget(
        host=parsed.host,
        port=parsed.port or 3306,
        user=parsed.user or "root",
        password=parsed.password or "",
        database=database,
    )


@asynccontextmanager
async def _server_connection(target: MySQLTarget, connect_timeout_s: float) -> AsyncIterator[Any]:
    """A connection to the server without selecting a database (for CREATE/DROP DATABASE)."""
    async with asyncio.timeout(connect_timeout_s * 2):
        conn = await aiomysql.connect(
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password,
            connect_timeout=connect_timeout_s,
            autocommit=True,
            # "database exists" notes would surface as Python warnings on every start-up.
            init_command="SET SESSION sql_notes = 0",
        )
    try:
        yield conn
    finally:
        conn.close()


async def ensure_database(url: str, *, connect_timeout_s: float = 2.0) -> None:
    """Create the database named in ``url`` (utf8mb4) unless it exists."""
    target = parse_mysql_url(url)
    async with (
        _server_connection(target, connect_timeout_s) as conn,
        conn.cursor() as cur,
        asyncio.timeout(_DDL_TIMEOUT_S),
    ):
        # The name is checked against _SAFE_NAME in parse_mysql_url; identifiers cannot be parameters.
        await cur.execute(
            f"CREATE DATABASE IF NOT EXISTS `{target.database}`"
            " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        )


async def drop_database(url: str, *, connect_timeout_s: float = 2.0) -> None:
    """Drop the database named in ``url`` if it exists (test clean-up)."""
    target = parse_mysql_url(url)
    async with (
        _server_connection(target, connect_timeout_s) as conn,
        conn.cursor() as cur,
        asyncio.timeout(_DDL_TIMEOUT_S),
    ):
        await cur.execute(f"DROP DATABASE IF EXISTS `{target.database}`")


async def open_mysql(
    url: str,
    *,
    maxsize: int = 20,
    connect_timeout_s: float = 2.0,
    create_database: bool = True,
    lock_wait_timeout_s: int | None = None,
    autocommit: bool = False,
) -> aiomysql.Pool:
    """An ``aiomysql.Pool`` of at most ``maxsize`` connections (autocommit off unless asked, utf8mb4).

    ``lock_wait_timeout_s`` bounds a row-lock wait (MariaDB's default is 50 s) so a caller can retry.
    ``autocommit=True`` suits a caller whose reads are single statements: no snapshot to end, and its
    writes say ``begin()`` themselves.
    """
    if create_database:
        await ensure_database(url, connect_timeout_s=connect_timeout_s)
    target = parse_mysql_url(url)
    async with asyncio.timeout(connect_timeout_s * 2):
        return await aiomysql.create_pool(
            minsize=1,
            maxsize=maxsize,
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password,
            db=target.database,
            connect_timeout=connect_timeout_s,
            autocommit=autocommit,
            charset="utf8mb4",
            init_command=(
                None
                if lock_wait_timeout_s is None
                else f"SET SESSION innodb_lock_wait_timeout = {int(lock_wait_timeout_s)}"
            ),
        )


async def close_mysql(pool: aiomysql.Pool) -> None:
    """Close ``pool``: wait briefly for borrowed connections, then cut them."""
    pool.close()
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await pool.wait_closed()
    except TimeoutError:
        pool.terminate()
        await pool.wait_closed()


def _stats(pool: Any) -> PoolStats:
    cond = pool._cond
    # aiomysql holds the condition's lock while it connects, so callers queue on the lock too.
    lock_waiters = cond._lock._waiters or ()
    return PoolStats(
        size=pool.maxsize, in_use=len(pool._used), waiting=len(cond._waiters) + len(lock_waiters)
    )


# Client errors 2000-2999 say the server could not be reached or the connection went (2003 cannot
# connect, 2006 gone away, 2013 lost during a query), except 2014: commands out of sync, a bug.
# Server errors that mean "not now": 1040 too many connections, 1053 shutting down, 4031 an idle
# connection the server dropped.
_NOT_AN_OUTAGE = frozenset({2014})
_SERVER_OUTAGES = frozenset({1040, 1053, 4031})


def unreachable(exc: Exception) -> bool:
    """Whether ``exc`` says the server is out of reach (rather than that a statement failed)."""
    if isinstance(exc, pymysql.err.InterfaceError):
        return True
    code = exc.args[0] if exc.args else None
    if not isinstance(code, int) or code in _NOT_AN_OUTAGE:
        return False
    return 2000 <= code < 3000 or code in _SERVER_OUTAGES


def mysql_pool(
    key: web.AppKey[aiomysql.Pool],
    url: str,
    *,
    name: str = "mysql",
    maxsize: int = 20,
    connect_timeout_s: float = 2.0,
    create_database: bool = True,
    lock_wait_timeout_s: int | None = None,
    autocommit: bool = False,
) -> CleanupCtx:
    """A ``cleanup_ctx`` resource: ``app[key]`` is the pool; ``/readyz`` fails as ``name`` without a
    ping, and a request that finds the server out of reach is a 503 naming ``name``, not a 500."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await open_mysql(
            url,
            maxsize=maxsize,
            connect_timeout_s=connect_timeout_s,
            create_database=create_database,
            lock_wait_timeout_s=lock_wait_timeout_s,
            autocommit=autocommit,
        )
        app[key] = pool

        async def ping() -> None:
            async with pool.acquire() as conn:
                await conn.ping(reconnect=False)

        add_readiness_check(app, name, ping)
        app[EDGE].add_unavailable(
            name, pymysql.err.OperationalError, pymysql.err.InterfaceError, when=unreachable
        )
        track_pool(app, name, pool, _stats)
        try:
            yield
        finally:
            untrack_pool(pool)
            await close_mysql(pool)

    return ctx
