"""Moving orders through the state machine: status, outbox event and stock change in one transaction.

Money follows the status. An order that leaves a status where money may have been taken (``paid``, or
``pending`` once the worker set out to charge it: ``payment_attempts`` > 0) for one that owes nothing
(``cancelled``, ``payment_failed``) queues :data:`REFUND_EVENT` in the same transaction, once per
order (``refund_requested_at``). The worker then asks the provider to refund whatever was captured for
the order, or to void the payment if nothing was yet, so that a charge still in flight can no longer
be captured (``orders.worker.fulfilment``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import aiomysql

from orders import outbox
from orders.db import placeholders, transaction, with_lock_retry
from orders.errors import NotFound
from orders.inventory import release_stock
from orders.metrics import TRANSITIONS
from orders.states import Status, check_transition
from orders.store import Order, fetch_orders, load_order

__all__ = [
    "OWES_NOTHING",
    "REFUNDED_EVENT",
    "REFUND_EVENT",
    "expire_unpaid",
    "move",
    "record_refund",
    "refund_owed",
    "start_payment",
    "transition",
]

REFUND_EVENT = "order.refund_requested"  # the order owes nothing now: whatever was captured goes back
REFUNDED_EVENT = "order.refunded"  # the provider gave the money back (or voided the payment)
OWES_NOTHING = frozenset({Status.CANCELLED, Status.PAYMENT_FAILED})


def refund_owed(order: Order, to: Status) -> bool:
    """Whether moving ``order`` to ``to`` must queue its refund (not yet queued, money may be taken)."""
    return to in OWES_NOTHING and order.payment_may_exist and not order.refund_requested


async def transition(
    cur: aiomysql.Cursor,
    order_id: int,
    to: Status,
    *,
    owner: str | None = None,
    payment_ref: str | None = None,
) -> Order:
    """Lock the order row, check the move is legal, apply it; :class:`NotFound` when missing or not
    ``owner``'s.

    Entering a status that owes nothing from one where money may have been taken also queues
    :data:`REFUND_EVENT` (the order with its ``payment_ref``, if known), see :func:`refund_owed`.

    Raises :class:`IllegalTransition` (the caller decides whether that is a 409 or "already done").
    """
    order = await load_order(cur, order_id, for_update=True)
    if order is None or (owner is not None and order.user_id != owner):
        raise NotFound("order", order_id)
    check_transition(order.status, to, order_id)
    refund = refund_owed(order, to)
    await cur.execute(
        "UPDATE orders SET status = %s, payment_ref = COALESCE(%s, payment_ref), "
        "refund_requested_at = IF(%s, UTC_TIMESTAMP(6), refund_requested_at), "
        "updated_at = UTC_TIMESTAMP(6) WHERE id = %s",
        (to.value, payment_ref, refund, order_id),
    )
    events = [(f"order.{to.value}", order.event(to))]
    if refund:
        # Money may have been taken: whoever settles payments must give it back, so say so here.
        events.append((REFUND_EVENT, {**order.event(to), "payment_ref": order.payment_ref}))
    await outbox.add(cur, events)
    if to is Status.CANCELLED:
        await release_stock(cur, {item.product_id: item.quantity for item in order.items})
    return dataclasses.replace(
        order,
        status=to,
        payment_ref=payment_ref or order.payment_ref,
        refund_requested=order.refund_requested or refund,
    )


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

    A pending order the worker set out to charge queues its refund too (:func:`refund_owed`): its
    charge may land after it expired.

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
        refunds = {order.id for order in orders if refund_owed(order, Status.CANCELLED)}
        await cur.execute(
            "UPDATE orders SET status = 'cancelled', updated_at = UTC_TIMESTAMP(6) "  # noqa: S608
            f"WHERE id IN ({placeholders(len(ids))})",
            ids,
        )
        if refunds:
            await cur.execute(
                "UPDATE orders SET refund_requested_at = UTC_TIMESTAMP(6) "  # noqa: S608
                f"WHERE id IN ({placeholders(len(refunds))})",
                sorted(refunds),
            )
        events = []
        for order in orders:
            events.append(("order.cancelled", order.event(Status.CANCELLED)))
            if order.id in refunds:
                events.append(
                    (REFUND_EVENT, {**order.event(Status.CANCELLED), "payment_ref": order.payment_ref})
                )
        await outbox.add(cur, events)
        released: Counter[int] = Counter()
        for order in orders:
            for item in order.items:
                released[item.product_id] += item.quantity
        await release_stock(cur, dict(released))
    TRANSITIONS.labels(Status.CANCELLED.value).inc(len(orders))
    return len(orders)


async def start_payment(pool: aiomysql.Pool, order_id: int, *, lock_attempts: int = 3) -> bool:
    """Note that the worker is about to charge ``order_id``; ``False`` (charge nothing) unless pending.

    Under the order's row lock, so a cancel or an expiry either comes first (and the order is not
    charged) or sees ``payment_attempts`` > 0 (and queues the refund): no charge goes unnoticed.
    """

    async def run() -> bool:
        async with transaction(pool) as cur:
            changed = await cur.execute(
                "UPDATE orders SET payment_attempts = payment_attempts + 1 "
                "WHERE id = %s AND status = 'pending'",
                (order_id,),
            )
        return bool(changed)

    return await with_lock_retry(run, attempts=lock_attempts)


async def record_refund(
    pool: aiomysql.Pool, order_id: int, refund_ref: str, amount_cents: int, *, lock_attempts: int = 3
) -> tuple[Order, bool]:
    """Record the provider's refund (``amount_cents`` 0: a void) and queue ``order.refunded``, once.

    Returns the order and whether this call recorded it (``False``: an earlier delivery did).
    """

    async def run() -> tuple[Order, bool]:
        async with transaction(pool) as cur:
            order = await load_order(cur, order_id, for_update=True)
            if order is None:
                raise NotFound("order", order_id)
            if order.refunded_cents is not None:
                return order, False
            await cur.execute(
                "UPDATE orders SET refund_ref = %s, refunded_cents = %s, refunded_at = UTC_TIMESTAMP(6), "
                "refund_requested_at = COALESCE(refund_requested_at, UTC_TIMESTAMP(6)) WHERE id = %s",
                (refund_ref, amount_cents, order_id),
            )
            event = {**order.event(order.status), "refund_ref": refund_ref, "refunded_cents": amount_cents}
            await outbox.add(cur, [(REFUNDED_EVENT, event)])
        return (
            dataclasses.replace(
                order, refund_requested=True, refund_ref=refund_ref, refunded_cents=amount_cents
            ),
            True,
        )

    return await with_lock_retry(run, attempts=lock_attempts)
