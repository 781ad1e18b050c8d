"""Which database ``BLOG_DATABASE_URL`` names: migrate it, open it, and hold it as an app resource.

``sqlite:///path`` (the default: a file, replicas on one host) or ``mysql://user:pass@host/db``
(MariaDB/MySQL: replicas anywhere). Each backend has its own migrations folder, applied by the same
tool (yoyo) to an equivalent schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiomysql
from aiohttp import web

from asynccore.app import CleanupCtx
from asynccore.migrations import apply_migrations
from asynccore.pools.mysql import ensure_database, mysql_pool, open_mysql
from asynccore.pools.sqlite import SQLiteDB, sqlite_db
from blog import db_mariadb, db_sqlite
from blog.db import Database

__all__ = ["backend_of", "database_resources", "migrate", "open_database"]


def backend_of(url: str) -> str:
    """``"sqlite"`` or ``"mariadb"``; ``ValueError`` for anything else."""
    if url.startswith("sqlite:///"):
        return "sqlite"
    if url.startswith("mysql://"):
        return "mariadb"
    raise ValueError("a blog database URL is sqlite:///path or mysql://user:pass@host/db")


async def migrate(url: str) -> None:
    """Create the database if needed and apply the migrations it has not had yet."""
    if backend_of(url) == "sqlite":
        Path(db_sqlite.sqlite_path(url)).parent.mkdir(parents=True, exist_ok=True)
        await apply_migrations(db_sqlite.sqlite_path(url), db_sqlite.MIGRATIONS)
    else:
        await ensure_database(url)
        await apply_migrations(url, db_mariadb.MIGRATIONS)


async def open_database(url: str, *, readers: int = 4) -> Database:
    """The migrated database at ``url``, outside an app (tests, tools); ``close()`` it."""
    if backend_of(url) == "sqlite":
        return db_sqlite.SQLiteDatabase(await SQLiteDB.open(db_sqlite.sqlite_path(url), readers=readers))
    pool = await open_mysql(url, maxsize=readers + 1, create_database=False, autocommit=True)
    return db_mariadb.MariaDBDatabase(pool, url)


def database_resources(key: web.AppKey[Database], url: str, *, readers: int) -> list[CleanupCtx]:
    """``cleanup_ctx`` generators: migrate, open the pool (readiness check, gauges, and for MariaDB
    503s while it is out of reach), then ``app[key]``. MariaDB's pool holds ``readers`` connections
    for reads and one more for the writer, like SQLite's."""
    if backend_of(url) == "sqlite":
        sqlite_key = web.AppKey("blog_sqlite", SQLiteDB)
        pool: CleanupCtx = sqlite_db(sqlite_key, db_sqlite.sqlite_path(url), readers=readers)

        def database(app: web.Application) -> Database:
            return db_sqlite.SQLiteDatabase(app[sqlite_key])
    else:
        mysql_key = web.AppKey("blog_mariadb", aiomysql.Pool)
        pool = mysql_pool(mysql_key, url, name="mariadb", maxsize=readers + 1, autocommit=True)

        def database(app: web.Application) -> Database:
            return db_mariadb.MariaDBDatabase(app[mysql_key], url)

    async def migrated(app: web.Application) -> AsyncIterator[None]:
        await migrate(url)
        yield

    async def seam(app: web.Application) -> AsyncIterator[None]:
        app[key] = database(app)  # the pool's own resource closes it
        yield

    return [migrated, pool, seam]
