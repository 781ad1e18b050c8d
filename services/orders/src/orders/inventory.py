"""Stock changes under the product row lock, and the invariant that proves none was lost or oversold.

Two ways to take stock, because the benchmark compares them:

* the one the service uses: the ``take_stock`` procedure (migration 0004), a conditional ``UPDATE …
  WHERE stock >= q`` per line in ascending product id order, called *last* in the transaction by
  ``place_orders_and_commit`` (0005), which commits in the same call inside the server, so the hot
  row is locked only for the server's own work (see ``placement`` and ``batching``);
* :func:`lock_products` — the naive baseline: ``SELECT … FOR UPDATE`` first, then the other writes,
  so the row stays locked for every round trip of the transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import aiomysql

from orders.db import placeholders
from orders.metrics import LOCK_WAIT, STOCKOUTS

__all__ = [
    "Audit",
    "Line",
    "OutOfStock",
    "audit",
    "lock_products",
    "release_stock",
]


@dataclass(frozen=True, slots=True)
class Line:
    """One order line as stored: ``index`` is its position in the request (for error messages)."""

    index: int
    product_id: int
    quantity: int
    price_cents: int


class OutOfStock(Exception):
    def __init__(self, line: Line, available: int | None = None) -> None:
        super().__init__(f"product {line.product_id}: {line.quantity} requested, {available} available")
        self.line = line
        self.available = available
        STOCKOUTS.inc()


async def lock_products(cur: aiomysql.Cursor, product_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """Baseline: lock the rows up front (ascending), ``{id: (price_cents, stock)}`` as seen under the lock."""
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


async def release_stock(cur: aiomysql.Cursor, quantities: dict[int, int]) -> None:
    """Give stock back (cancel, expiry), ascending by product id like every other stock change."""
    for product_id in sorted(quantities):
        started = time.perf_counter()
        await cur.execute(
            "UPDATE products SET stock = stock + %s WHERE id = %s", (quantities[product_id], product_id)
        )
        LOCK_WAIT.observe(time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class Audit:
    """``initial + restocked == stock + held`` (held: ordered by orders that are not cancelled)."""

    product_id: int
    initial: int
    restocked: int
    stock: int
    held: int

    @property
    def holds(self) -> bool:
        return self.stock >= 0 and self.initial + self.restocked == self.stock + self.held


async def audit(pool: aiomysql.Pool, product_ids: Iterable[int]) -> list[Audit]:
    """The invariant per product, from one consistent snapshot."""
    ids = sorted(product_ids)
    if not ids:
        return []
    marks = placeholders(len(ids))
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        await cur.execute(
            f"""
            SELECT p.id, p.initial_stock, p.stock,
                   (SELECT COALESCE(SUM(r.quantity), 0) FROM restocks r WHERE r.product_id = p.id),
                   (SELECT COALESCE(SUM(i.quantity), 0) FROM order_items i
                      JOIN orders o ON o.id = i.order_id
                     WHERE i.product_id = p.id AND o.status <> 'cancelled')
              FROM products p WHERE p.id IN ({marks}) ORDER BY p.id
            """,  # noqa: S608
            ids,
        )
        rows = await cur.fetchall()
        await conn.commit()
    return [Audit(row[0], int(row[1]), int(row[3]), int(row[2]), int(row[4])) for row in rows]
