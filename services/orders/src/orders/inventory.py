"""Stock given back under the product row lock, and the invariant that proves none was lost or oversold.

Stock is *taken* only inside the ``take_stock`` procedure (``procedures/take_stock.sql``), called by
``place_orders_and_commit`` (see ``placement``); what is left here gives stock back (cancel, expiry)
and audits it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import aiomysql

from orders.db import placeholders
from orders.metrics import LOCK_WAIT

__all__ = ["Audit", "audit", "release_stock"]


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
