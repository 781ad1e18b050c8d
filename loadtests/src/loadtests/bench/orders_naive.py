"""A naive locking placer for the orders service's invariant tests: lock the product rows first.

``python -m loadtests.bench.orders_naive`` serves the orders API as ``python -m orders`` does (same
settings, resources, routes and error table) except for how an order is placed: :class:`NaivePlacer`
runs ``SELECT … FOR UPDATE`` on the order's product rows (ascending ids), then a round trip per
UPDATE and INSERT, and commits, so the hot row stays locked for every round trip of the transaction.
No batching and no stock sightings. The invariant tests (``services/orders/tests``) run it beside
ours; ``make bench-orders`` no longer does: its baseline is the article's own handler
(:mod:`loadtests.bench.orders_article`). The service itself has no switch for it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace

import aiomysql
from aiohttp import web

from asynccore.app import CleanupCtx, create_app, run
from asynccore.settings import load_settings
from orders import outbox
from orders.api import PLACER, routes
from orders.batching import Placer
from orders.db import placeholders, transaction
from orders.metrics import LOCK_WAIT
from orders.models import Line
from orders.placement import Placed, Wanted, duplicate_key, new_order, price_lines
from orders.relay import background
from orders.resources import DB, database
from orders.settings import OrdersSettings
from orders.sightings import Sightings
from orders.states import Status
from orders.store import Order

__all__ = ["NaivePlacer", "build_app", "lock_products", "main"]


class NaivePlacer(Placer):
    """Each order in its own transaction, its product rows locked before anything else is done."""

    async def place(self, wanted: Wanted) -> Placed:
        async with transaction(self.pool) as cur:
            locked = await lock_products(cur, wanted.product_ids())
            lines = price_lines(wanted.request, locked)
            for line in sorted(lines, key=lambda line: line.product_id):
                await cur.execute(
                    "UPDATE products SET stock = stock - %s WHERE id = %s", (line.quantity, line.product_id)
                )
            return Placed(await _write_order(cur, wanted, lines), replayed=False)


async def lock_products(cur: aiomysql.Cursor, product_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """Lock the rows up front (ascending), ``{id: (price_cents, stock)}`` as seen under the lock."""
    ids = sorted(product_ids)
    started = time.perf_counter()
    await cur.execute(
        "SELECT id, price_cents, stock FROM products "  # noqa: S608
        f"WHERE id IN ({placeholders(len(ids))}) ORDER BY id FOR UPDATE",
        ids,
    )
    rows = await cur.fetchall()
    LOCK_WAIT.observe(time.perf_counter() - started)
    return {row[0]: (row[1], row[2]) for row in rows}


async def _write_order(cur: aiomysql.Cursor, wanted: Wanted, lines: list[Line]) -> Order:
    """INSERT the order, its items and its ``order.created`` event, a round trip each."""
    order = new_order(wanted.caller, lines, order_id=0)
    with duplicate_key():
        await cur.execute(
            "INSERT INTO orders (user_id, username, status, total_cents, idempotency_key, request_hash, "
            "created_at, updated_at) VALUES (%s, %s, 'pending', %s, %s, %s, %s, %s)",
            (
                wanted.caller.user_id,
                wanted.caller.username,
                order.total_cents,
                wanted.key,
                wanted.request_hash if wanted.key else None,
                order.created_at,
                order.updated_at,
            ),
        )
    order = replace(order, id=cur.lastrowid)
    await cur.executemany(
        "INSERT INTO order_items (order_id, product_id, quantity, price_cents) VALUES (%s, %s, %s, %s)",
        [(order.id, item.product_id, item.quantity, item.price_cents) for item in order.items],
    )
    await outbox.add(cur, [("order.created", order.event(Status.PENDING))])
    return order


def naive_placing(settings: OrdersSettings) -> CleanupCtx:
    """A :class:`NaivePlacer` where the service has its batcher."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[PLACER] = NaivePlacer(app[DB], Sightings(), lock_attempts=settings.lock_retry_attempts)
        yield

    return ctx


def build_app(settings: OrdersSettings) -> web.Application:
    """``orders.app.build_app`` with the naive placer: the same resources (relay included) and routes."""
    app = create_app(
        "orders",
        settings,
        resources=[
            *database(settings, maxsize=settings.mysql_pool_size),
            naive_placing(settings),
            background(settings),
        ],
    )
    routes(app)
    return app


def main() -> None:
    settings = load_settings(OrdersSettings)
    run(build_app(settings), settings.orders_port)


if __name__ == "__main__":
    main()
