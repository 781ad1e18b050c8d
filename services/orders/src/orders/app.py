"""The orders API application: resources in dependency order, then routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from asynccore.app import CleanupCtx, create_app
from asynccore.revocation import token_revocations
from orders import api
from orders.batching import Batcher
from orders.relay import background
from orders.resources import DB, database
from orders.settings import OrdersSettings
from orders.sightings import Sightings

__all__ = ["build_app"]

MAX_WAITING = 10_000  # orders queued for a batch per process; beyond that each goes on its own


def build_app(settings: OrdersSettings) -> web.Application:
    app = create_app(
        "orders",
        settings,
        resources=[
            *database(settings, maxsize=settings.mysql_pool_size),
            token_revocations(settings),  # a password change in the blog revokes older tokens here too
            batching(settings),
            background(settings),
        ],
    )
    api.routes(app)
    return app


def batching(settings: OrdersSettings) -> CleanupCtx:
    """The process's :class:`Batcher`; closed (running batches finished) before the pool closes."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        batcher = Batcher(
            app[DB],
            Sightings(),  # one per process: concurrent buyers share what reads saw
            max_batch=settings.orders_batch_max,
            in_flight=settings.orders_batches_in_flight,
            max_waiting=MAX_WAITING,
            lock_attempts=settings.lock_retry_attempts,
        )
        app[api.PLACER] = batcher
        yield
        await batcher.close()

    return ctx
