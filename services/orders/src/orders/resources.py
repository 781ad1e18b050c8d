"""Resources the API and the worker share: the database pool, with the schema migrated at start-up,
and the typed settings key (``create_app`` stores the settings under it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiomysql
from aiohttp import web

from asynccore.app import CleanupCtx
from asynccore.migrations import apply_migrations
from asynccore.pools.mysql import mysql_pool
from asynccore.web import settings_key
from orders.settings import OrdersSettings

__all__ = ["DB", "MIGRATIONS", "SETTINGS", "database"]

DB = web.AppKey("orders_db", aiomysql.Pool)
SETTINGS = settings_key(OrdersSettings)  # request.app[SETTINGS]: the OrdersSettings, typed
MIGRATIONS = Path(__file__).parent / "migrations"


def database(settings: OrdersSettings, *, maxsize: int) -> list[CleanupCtx]:
    """The pool (creating the database if missing), then the migrations, in that order."""

    async def migrated(app: web.Application) -> AsyncIterator[None]:
        await apply_migrations(settings.mysql_url, MIGRATIONS)
        yield

    pool = mysql_pool(
        DB, settings.mysql_url, maxsize=maxsize, lock_wait_timeout_s=settings.lock_wait_timeout_s
    )
    return [pool, migrated]
