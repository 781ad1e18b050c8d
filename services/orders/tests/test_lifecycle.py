"""The state machine applied: legal moves only, stock released exactly once, unpaid orders expire."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiomysql
import orjson
import pytest
from conftest import place_order

from asynccore.auth import Caller
from asynccore.migrations import apply_migrations
from asynccore.pools.mysql import close_mysql, open_mysql
from orders.api import http_error
from orders.db import transaction
from orders.errors import NotFound
from orders.inventory import audit
from orders.lifecycle import REFUND_EVENT, expire_unpaid, move, start_payment
from orders.models import NewOrder, NewProduct, OrderLine
from orders.products import create_product
from orders.resources import MIGRATIONS
from orders.states import ALLOWED, IllegalTransition, Status, check_transition

ALICE = Caller("alice-id", "alice", "")


async def _placed(pool: aiomysql.Pool, quantity: int = 2, stock: int = 10) -> tuple[int, int]:
    pid = (await create_product(pool, NewProduct(sku="s", name="s", price_cents=100, stock=stock))).id
    placed = await place_order(
        pool, ALICE, NewOrder(items=[OrderLine(product_id=pid, quantity=quantity)]), None
    )
    return placed.order.id, pid


async def _events(pool: aiomysql.Pool) -> list[str]:
    async with transaction(pool) as cur:
        await cur.execute("SELECT routing_key FROM outbox ORDER BY id")
        return [row[0] for row in await cur.fetchall()]


def test_state_machine_allows_only_the_documented_moves() -> None:
    legal = {(a, b) for a, targets in ALLOWED.items() for b in targets}
    assert legal == {
        (Status.PENDING, Status.PAID),
        (Status.PENDING, Status.CANCELLED),
        (Status.PENDING, Status.PAYMENT_FAILED),
        (Status.PAID, Status.FULFILLED),
        (Status.PAID, Status.CANCELLED),
        (Status.PAYMENT_FAILED, Status.CANCELLED),
    }
    for current in Status:
        for to in Status:
            if (current, to) not in legal:
                with pytest.raises(IllegalTransition):
                    check_transition(current, to)


async def test_concurrent_cancels_release_stock_once(pool: aiomysql.Pool) -> None:
    order_id, pid = await _placed(pool, quantity=3)
    results = await asyncio.gather(
        *(move(pool, order_id, Status.CANCELLED, owner=ALICE.user_id) for _ in range(10)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, IllegalTransition) for r in results if isinstance(r, BaseException))
    (state,) = await audit(pool, [pid])
    assert state.stock == 10 and state.held == 0 and state.holds
    assert await _events(pool) == ["order.created", "order.cancelled"]


async def test_cancelling_a_paid_order_requests_its_refund(pool: aiomysql.Pool) -> None:
    order_id, pid = await _placed(pool, quantity=2)
    await move(pool, order_id, Status.PAID, payment_ref="pay-123")
    await move(pool, order_id, Status.CANCELLED, owner=ALICE.user_id)

    assert await _events(pool) == ["order.created", "order.paid", "order.cancelled", REFUND_EVENT]
    async with transaction(pool) as cur:
        await cur.execute("SELECT payload FROM outbox WHERE routing_key = %s", (REFUND_EVENT,))
        (payload,) = await cur.fetchone()
    refund = orjson.loads(payload)
    assert refund["order_id"] == order_id and refund["payment_ref"] == "pay-123"
    assert refund["total_cents"] == 200 and refund["status"] == "cancelled"
    (state,) = await audit(pool, [pid])
    assert state.stock == 10 and state.holds


async def test_only_the_owner_can_cancel(pool: aiomysql.Pool) -> None:
    order_id, _ = await _placed(pool)
    with pytest.raises(NotFound) as err:
        await move(pool, order_id, Status.CANCELLED, owner="mallory")
    assert http_error(err.value).status == 404


async def test_fulfilled_orders_cannot_be_cancelled(pool: aiomysql.Pool) -> None:
    order_id, pid = await _placed(pool)
    await move(pool, order_id, Status.PAID, payment_ref="ch_1")
    await move(pool, order_id, Status.FULFILLED)
    with pytest.raises(IllegalTransition):
        await move(pool, order_id, Status.CANCELLED, owner=ALICE.user_id)
    (state,) = await audit(pool, [pid])
    assert state.held == 2 and state.holds


async def test_unpaid_orders_expire_and_release_stock(pool: aiomysql.Pool) -> None:
    pending, pid = await _placed(pool, quantity=2)
    failed = (
        await place_order(pool, ALICE, NewOrder(items=[OrderLine(product_id=pid, quantity=1)]), None)
    ).order.id
    paid = (
        await place_order(pool, ALICE, NewOrder(items=[OrderLine(product_id=pid, quantity=4)]), None)
    ).order.id
    await move(pool, failed, Status.PAYMENT_FAILED)
    await move(pool, paid, Status.PAID, payment_ref="ch_1")

    assert await expire_unpaid(pool, older_than_s=3600) == 0  # nothing that old yet
    # Two replicas expiring at once: SKIP LOCKED splits the rows, nothing is released twice.
    counts = await asyncio.gather(expire_unpaid(pool, older_than_s=0), expire_unpaid(pool, older_than_s=0))
    assert sum(counts) == 2

    async with transaction(pool) as cur:
        await cur.execute("SELECT id, status FROM orders ORDER BY id")
        statuses = dict(await cur.fetchall())
    assert statuses == {pending: "cancelled", failed: "cancelled", paid: "paid"}
    (state,) = await audit(pool, [pid])
    assert state.stock == 6 and state.held == 4 and state.holds


async def _refund_requested(pool: aiomysql.Pool, order_id: int) -> bool:
    async with transaction(pool) as cur:
        await cur.execute("SELECT refund_requested_at IS NOT NULL FROM orders WHERE id = %s", (order_id,))
        return bool((await cur.fetchone())[0])


async def test_an_order_never_charged_is_cancelled_without_a_refund(pool: aiomysql.Pool) -> None:
    order_id, _ = await _placed(pool)
    await move(pool, order_id, Status.CANCELLED, owner=ALICE.user_id)
    assert await _events(pool) == ["order.created", "order.cancelled"]
    assert not await _refund_requested(pool, order_id)
    assert not await start_payment(pool, order_id)  # and the worker will not charge it now


@pytest.mark.parametrize("how", ["cancel", "expiry"])
async def test_cancelling_an_order_whose_charge_is_under_way_requests_its_refund(
    pool: aiomysql.Pool, how: str
) -> None:
    """The worker set out to charge it: the charge may land after the cancel, so it must be undone."""
    order_id, pid = await _placed(pool)
    assert await start_payment(pool, order_id)
    if how == "cancel":
        await move(pool, order_id, Status.CANCELLED, owner=ALICE.user_id)
    else:
        assert await expire_unpaid(pool, older_than_s=0) == 1
    assert await _events(pool) == ["order.created", "order.cancelled", REFUND_EVENT]
    assert await _refund_requested(pool, order_id)
    (state,) = await audit(pool, [pid])
    assert state.stock == 10 and state.holds


async def test_a_failed_payment_requests_its_refund_once(pool: aiomysql.Pool) -> None:
    """Giving up on a payment voids it (a timed-out charge may still land); expiring it later does not
    ask again."""
    order_id, _ = await _placed(pool)
    assert await start_payment(pool, order_id)
    await move(pool, order_id, Status.PAYMENT_FAILED)
    assert await expire_unpaid(pool, older_than_s=0) == 1
    assert await _events(pool) == ["order.created", "order.payment_failed", REFUND_EVENT, "order.cancelled"]


async def test_paid_orders_cancelled_before_refunds_existed_get_their_refund_queued(
    mysql_url: str, tmp_path: Path
) -> None:
    """Migration 0007: the order.refund_requested events queued before anything consumed them were
    dropped by the broker; those orders get theirs again, through the outbox."""
    for migration in sorted(MIGRATIONS.glob("*.sql")):
        if migration.name < "0007":
            shutil.copy(migration, tmp_path)
    pool = await open_mysql(mysql_url, maxsize=2)  # creates the database
    try:
        await apply_migrations(mysql_url, tmp_path)
        async with transaction(pool) as cur:  # as the code before 0007 left them
            await cur.execute(
                "INSERT INTO orders (id, user_id, username, status, total_cents, payment_ref) VALUES "
                "(1, 'u', 'ann', 'cancelled', 700, 'ch_old'), (2, 'u', 'ann', 'cancelled', 300, NULL), "
                "(3, 'u', 'ann', 'paid', 500, 'ch_kept')"
            )
        await apply_migrations(mysql_url, MIGRATIONS)
        async with transaction(pool) as cur:
            await cur.execute("SELECT routing_key, payload, sent_at FROM outbox")
            ((key, payload, sent_at),) = await cur.fetchall()
            await cur.execute("SELECT id FROM orders WHERE refund_requested_at IS NOT NULL")
            requested = [row[0] for row in await cur.fetchall()]
        event = orjson.loads(payload)
        assert (key, sent_at, event["order_id"], event["payment_ref"]) == (REFUND_EVENT, None, 1, "ch_old")
        assert requested == [1]
    finally:
        await close_mysql(pool)
