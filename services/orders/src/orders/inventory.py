"""Stock changes under the product row lock, and the invariant that proves none was lost or oversold.

Two ways to take stock live here side by side because the benchmark compares them:

* :func:`take_stock` — the one the service uses: a conditional ``UPDATE … WHERE stock >= q`` per line,
  in ascending product id order, issued *last* in the transaction and committed by the same call
  inside the server, so the hot row is locked only for the server's own work.
* :func:`lock_products` — the naive baseline: ``SELECT … FOR UPDATE`` first, then the other writes,
  so the row stays locked for every round trip of the transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import aiomysql
import orjson

from orders.db import placeholders
from orders.metrics import LOCK_WAIT, STOCKOUTS

__all__ = [
    "Audit",
    "Line",
    "OutOfStock",
    "audit",
    "lock_products",
    "release_stock",
    "take_stock",
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


async def take_stock(cur: aiomysql.Cursor, lines: Iterable[Line]) -> None:
    """Decrement stock for every line and COMMIT, in one call the server runs start to finish.

    ``take_stock_and_commit`` (migration 0003) runs ``UPDATE … SET stock = stock - q WHERE id = ? AND
    stock >= q`` line by line in ascending product id order (two multi-line orders cannot deadlock),
    then commits the caller's transaction, or rolls it all back at the first short line, which
    :class:`OutOfStock` then names. The row lock is taken and released inside the server: never held
    across a network round trip or a turn of our event loop, whatever the load on this process.
    """
    ordered = sorted(lines, key=lambda line: line.product_id)
    started = time.perf_counter()
    await cur.execute(
        "CALL take_stock_and_commit(%s)",
        (orjson.dumps([[line.product_id, line.quantity] for line in ordered]).decode(),),
    )
    ((short,),) = await cur.fetchall()
    while await cur.nextset():  # the CALL's own status; the connection is usable only once it is read
        pass
    LOCK_WAIT.observe(time.perf_counter() - started)
    if short >= 0:
        raise OutOfStock(ordered[short])


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
