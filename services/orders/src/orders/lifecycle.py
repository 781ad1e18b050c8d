"""Moving orders through the state machine: status, outbox event and stock change in one transaction."""

from __future__ import annotations

import dataclasses
from collections import Counter

import aiomysql

from asynccore.errors import ApiError
from orders import outbox
from orders.db import placeholders, transaction, with_lock_retry
from orders.inventory import release_stock
from orders.metrics import TRANSITIONS
from orders.states import Status, check_transition
from orders.store import Order, fetch_orders, load_order

__all__ = ["REFUND_EVENT", "expire_unpaid", "move", "transition"]

REFUND_EVENT = "order.refund_requested"  # a paid order was cancelled: its payment must be returned


async def transition(
    cur: aiomysql.Cursor,
    order_id: int,
    to: Status,
    *,
    owner: str | None = None,
    payment_ref: str | None = None,
) -> Order:
    """Lock the order row, check the move is legal, apply it; 404 when missing or not ``owner``'s.

    Cancelling a paid order also queues :data:`REFUND_EVENT` (the order with its ``payment_ref``).

    Raises :class:`IllegalTransition` (the caller decides whether that is a 409 or "already done").
    """
    order = await load_order(cur, order_id, for_update=True)
    if order is None or (owner is not None and order.user_id != owner):
        raise ApiError(404, "order", f"order {order_id} not found")
    check_transition(order.status, to)
    await cur.execute(
        "UPDATE orders SET status = %s, payment_ref = COALESCE(%s, payment_ref), "
        "updated_at = UTC_TIMESTAMP(6) WHERE id = %s",
        (to.value, payment_ref, order_id),
    )
    events = [(f"order.{to.value}", order.event(to))]
    if to is Status.CANCELLED and order.status is Status.PAID:
        # The customer paid: whoever settles payments must refund it, so say so in this transaction.
        events.append((REFUND_EVENT, {**order.event(to), "payment_ref": order.payment_ref}))
    await outbox.add(cur, events)
    if to is Status.CANCELLED:
        await release_stock(cur, {item.product_id: item.quantity for item in order.items})
    return dataclasses.replace(order, status=to, payment_ref=payment_ref or order.payment_ref)


async def move(
    pool: aiomysql.Pool,
    order_id: int,
    to: Status,
    *,
    owner: str | None = None,
    payment_ref: str | None = None,
    lock_attempts: int = 3,
) -> Order:
    """:func:`transition` in its own transaction, retried on lock conflicts, counted once committed."""

    async def run() -> Order:
        async with transaction(pool) as cur:
            return await transition(cur, order_id, to, owner=owner, payment_ref=payment_ref)

    order = await with_lock_retry(run, attempts=lock_attempts)
    TRANSITIONS.labels(to.value).inc()
    return order


async def expire_unpaid(pool: aiomysql.Pool, *, older_than_s: float, batch: int = 100) -> int:
    """Cancel unpaid orders (pending or payment_failed) older than ``older_than_s``; release their stock.

    ``SKIP LOCKED`` lets every replica run this at once: each claims rows no other holds (an order being
    cancelled by its owner right now is skipped, and seen again next run). Stock for the whole batch is
    released in ascending product id order, like every other stock change.
    """
    async with transaction(pool) as cur:
        # READ COMMITTED: no gap locks on the status index, so new orders are never blocked by this scan.
        await cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        orders = await fetch_orders(
            cur,
            "status IN ('pending', 'payment_failed') "
            "AND created_at < UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND",
            (int(older_than_s * 1e6),),
            tail=f"ORDER BY id LIMIT {int(batch)} FOR UPDATE SKIP LOCKED",
        )
        if not orders:
            return 0
        for order in orders:
            check_transition(order.status, Status.CANCELLED)
        ids = [order.id for order in orders]
        await cur.execute(
            "UPDATE orders SET status = 'cancelled', updated_at = UTC_TIMESTAMP(6) "  # noqa: S608
            f"WHERE id IN ({placeholders(len(ids))})",
            ids,
        )
        await outbox.add(cur, [("order.cancelled", order.event(Status.CANCELLED)) for order in orders])
        released: Counter[int] = Counter()
        for order in orders:
            for item in order.items:
                released[item.product_id] += item.quantity
        await release_stock(cur, dict(released))
    TRANSITIONS.labels(Status.CANCELLED.value).inc(len(orders))
    return len(orders)
