"""Placing orders: idempotency keys, errors that name the item, lock conflicts retried then a 503."""

from __future__ import annotations

import asyncio

import aiomysql
import orjson
import pytest
from conftest import place_order
from prometheus_client import REGISTRY, generate_latest

from asynccore.auth import Caller
from asynccore.testing import metric_value
from loadtests.bench.orders_naive import NaivePlacer
from orders.api import http_error
from orders.batching import Placer
from orders.db import LockConflict, in_transaction, transaction, with_lock_retry
from orders.errors import Contention, DuplicateLine, KeyReused, OutOfStock, UnknownProduct
from orders.inventory import audit
from orders.models import Line, NewOrder, NewProduct, OrderLine
from orders.placement import Wanted, commit_orders
from orders.products import create_product
from orders.sightings import Sightings
from orders.store import Order, list_orders

ALICE = Caller("alice-id", "alice", "")
BOB = Caller("bob-id", "bob", "")
CAROL = Caller("carol-id", "carol", "")


def order(*lines: tuple[int, int]) -> NewOrder:
    return NewOrder(items=[OrderLine(product_id=pid, quantity=qty) for pid, qty in lines])


async def product(pool: aiomysql.Pool, stock: int = 10, sku: str = "sku1", price: int = 250) -> int:
    return (await create_product(pool, NewProduct(sku=sku, name=sku, price_cents=price, stock=stock))).id


async def test_order_totals_and_items_are_priced_from_the_catalogue(pool: aiomysql.Pool) -> None:
    a, b = await product(pool, sku="a", price=250), await product(pool, sku="b", price=1000)
    placed = await place_order(pool, ALICE, order((b, 1), (a, 3)), None)
    body = placed.order.to_json()
    assert body["status"] == "pending" and body["user_id"] == "alice-id"
    assert body["total_cents"] == 3 * 250 + 1000
    assert body["items"] == [
        {"product_id": a, "quantity": 3, "price_cents": 250},
        {"product_id": b, "quantity": 1, "price_cents": 1000},
    ]


async def test_same_key_and_body_replays_the_original_order(pool: aiomysql.Pool) -> None:
    pid = await product(pool, stock=1)
    first = await place_order(pool, ALICE, order((pid, 1)), "key-1")
    # Sold out now, yet the retry of the same request still gets its order back.
    again = await place_order(pool, ALICE, order((pid, 1)), "key-1")
    assert not first.replayed and again.replayed
    assert again.order.id == first.order.id
    (state,) = await audit(pool, [pid])
    assert state.held == 1 and state.holds


async def test_same_key_with_another_body_is_422(pool: aiomysql.Pool) -> None:
    pid = await product(pool)
    await place_order(pool, ALICE, order((pid, 1)), "key-1")
    with pytest.raises(KeyReused) as err:
        await place_order(pool, ALICE, order((pid, 2)), "key-1")
    error = http_error(err.value)
    assert error.status == 422 and "Idempotency-Key" in error.errors


async def test_keys_belong_to_their_user(pool: aiomysql.Pool) -> None:
    pid = await product(pool)
    mine = await place_order(pool, ALICE, order((pid, 1)), "shared-key")
    theirs = await place_order(pool, BOB, order((pid, 2)), "shared-key")
    assert not theirs.replayed and theirs.order.id != mine.order.id


@pytest.mark.parametrize(("first", "second"), [("key-abc", "Key-AbC"), ("key", "key "), ("clé", "cle")])
async def test_keys_differing_in_case_accents_or_trailing_space_are_two_orders(
    pool: aiomysql.Pool, first: str, second: str
) -> None:
    """Keys are compared byte for byte: ``Key-AbC`` never replays ``key-abc``'s order (issue 16, 9)."""
    pid = await product(pool)
    one = await place_order(pool, ALICE, order((pid, 1)), first)
    other = await place_order(pool, ALICE, order((pid, 2)), second)  # a different body: no 422 either
    assert not other.replayed and other.order.id != one.order.id
    assert (await place_order(pool, ALICE, order((pid, 2)), second)).order.id == other.order.id
    (state,) = await audit(pool, [pid])
    assert state.held == 3 and state.holds


async def test_user_ids_differing_in_case_or_trailing_space_are_other_users(pool: aiomysql.Pool) -> None:
    """``Alice-ID`` neither replays nor lists ``alice-id``'s orders (the id is compared exactly)."""
    pid = await product(pool)
    mine = await place_order(pool, ALICE, order((pid, 1)), "k")
    for impostor in (Caller("ALICE-ID", "alice", ""), Caller("alice-id ", "alice", "")):
        theirs = await place_order(pool, impostor, order((pid, 1)), "k")
        assert not theirs.replayed and theirs.order.id != mine.order.id
        listed = await list_orders(pool, impostor.user_id, limit=10, before=None)
        assert [o.id for o in listed] == [theirs.order.id]
    assert [o.id for o in await list_orders(pool, ALICE.user_id, limit=10, before=None)] == [mine.order.id]


async def test_concurrent_requests_with_one_key_make_one_order(pool: aiomysql.Pool) -> None:
    pid = await product(pool, stock=100)
    results = await asyncio.gather(*(place_order(pool, ALICE, order((pid, 1)), "once") for _ in range(20)))
    assert len({placed.order.id for placed in results}) == 1
    assert sum(not placed.replayed for placed in results) == 1
    (state,) = await audit(pool, [pid])
    assert state.held == 1 and state.stock == 99


async def test_out_of_stock_names_the_item(pool: aiomysql.Pool) -> None:
    a, b = await product(pool, sku="a", stock=5), await product(pool, sku="b", stock=1)
    with pytest.raises(OutOfStock) as err:
        await place_order(pool, ALICE, order((a, 2), (b, 3)), None)
    error = http_error(err.value)
    assert error.status == 409
    assert list(error.errors) == ["items[1].quantity"]
    assert f"product {b}" in error.errors["items[1].quantity"][0]
    # Nothing half-written: the line that fitted was not taken either.
    assert all(state.held == 0 and state.holds for state in await audit(pool, [a, b]))


@pytest.mark.parametrize("placer", [Placer, NaivePlacer])
async def test_the_created_event_is_the_committed_order(pool: aiomysql.Pool, placer: type[Placer]) -> None:
    """Ours, and the naive baseline the benchmark compares it with (``loadtests.bench.orders_naive``)."""
    a, b = await product(pool, sku="a", price=250), await product(pool, sku="b", price=1000)
    placed = await placer(pool, Sightings()).place_order(ALICE, order((b, 2), (a, 1)), "k")
    async with transaction(pool) as cur:
        await cur.execute("SELECT routing_key, payload FROM outbox")
        ((key, payload),) = await cur.fetchall()
    event, expected = orjson.loads(payload), placed.order.event(placed.order.status)
    assert key == "order.created" and event.pop("ts") <= expected.pop("ts")
    assert event == expected and event["order_id"] == placed.order.id


async def test_an_order_the_server_finds_short_is_undone_alone(pool: aiomysql.Pool) -> None:
    """In one call: the read saw enough for each order, but not for all of them together."""
    a, b = await product(pool, sku="a", stock=5), await product(pool, sku="b", stock=2)
    now = Sightings().now()
    batch = [
        (Wanted(ALICE, order((b, 1), (a, 2)), None, "h1", now), [Line(0, b, 1, 1000), Line(1, a, 2, 250)]),
        # a fits, b does not (1 left): its take of a is undone too, so CAROL's 3 of a fit.
        (Wanted(BOB, order((b, 2), (a, 1)), None, "h2", now), [Line(0, b, 2, 1000), Line(1, a, 1, 250)]),
        (Wanted(CAROL, order((a, 3)), "key", "h3", now), [Line(0, a, 3, 250)]),
    ]
    async with pool.acquire() as conn, in_transaction(conn, ends_itself=True) as cur:
        first, short, third = await commit_orders(cur, batch)
    assert isinstance(first, Order) and isinstance(third, Order)
    assert isinstance(short, OutOfStock) and short.line == Line(0, b, 2, 1000) and short.available == 1
    async with transaction(pool) as cur:
        await cur.execute("SELECT id FROM orders ORDER BY id")
        assert [row[0] for row in await cur.fetchall()] == [first.id, third.id]
        await cur.execute("SELECT DISTINCT order_id FROM order_items ORDER BY 1")
        assert [row[0] for row in await cur.fetchall()] == [first.id, third.id]
        await cur.execute("SELECT payload FROM outbox ORDER BY id")
        assert [orjson.loads(row[0])["order_id"] for row in await cur.fetchall()] == [first.id, third.id]
    states = {state.product_id: state for state in await audit(pool, [a, b])}
    assert (states[a].stock, states[b].stock) == (0, 1) and all(s.holds for s in states.values())
    # The key belongs to CAROL's placed order; a new key works once stock allows.
    async with transaction(pool) as cur:
        await cur.execute("SELECT idempotency_key, request_hash FROM orders WHERE id = %s", (third.id,))
        assert await cur.fetchone() == ("key", "h3")
    assert not (await place_order(pool, BOB, order((b, 1)), "another")).replayed


async def test_one_call_places_a_batch_each_order_with_its_own_rows(pool: aiomysql.Pool) -> None:
    a, b = await product(pool, sku="a", stock=5, price=250), await product(pool, sku="b", stock=3, price=1000)
    sightings = Sightings()
    wanted = [
        Wanted(ALICE, order((b, 1), (a, 2)), "key", "hash-a", sightings.now()),
        Wanted(BOB, order((b, 2)), None, "hash-b", sightings.now()),
    ]
    async with pool.acquire() as conn, in_transaction(conn, ends_itself=True) as cur:
        placed = await commit_orders(
            cur, [(wanted[0], [Line(0, b, 1, 1000), Line(1, a, 2, 250)]), (wanted[1], [Line(0, b, 2, 1000)])]
        )
    orders = [o for o in placed if isinstance(o, Order)]
    assert [o.user_id for o in orders] == ["alice-id", "bob-id"] and orders[0].id < orders[1].id
    assert [o.total_cents for o in orders] == [1500, 2000]
    async with transaction(pool) as cur:
        await cur.execute("SELECT order_id, product_id, quantity, price_cents FROM order_items ORDER BY 1, 2")
        assert await cur.fetchall() == (
            (orders[0].id, a, 2, 250),
            (orders[0].id, b, 1, 1000),
            (orders[1].id, b, 2, 1000),
        )
        await cur.execute("SELECT payload FROM outbox ORDER BY id")
        events = [orjson.loads(row[0]) for row in await cur.fetchall()]
        await cur.execute("SELECT idempotency_key, request_hash FROM orders ORDER BY id")
        assert await cur.fetchall() == (("key", "hash-a"), (None, None))
    assert [(e["order_id"], e["total_cents"]) for e in events] == [(o.id, o.total_cents) for o in orders]
    states = {state.product_id: state for state in await audit(pool, [a, b])}
    assert states[a].stock == 3 and states[b].stock == 0 and all(s.holds for s in states.values())


async def _savepoints(cur: aiomysql.Cursor) -> int:
    await cur.execute("SHOW SESSION STATUS LIKE 'Com_savepoint'")
    return int((await cur.fetchone())[1])


async def test_a_batch_whose_total_fits_takes_it_per_product_without_savepoints(pool: aiomysql.Pool) -> None:
    """The locked stock covers the batch's total per product: one UPDATE per product, no per-order
    savepoint; a batch one unit over goes order by order (a savepoint each) and refuses the last."""
    a, b = await product(pool, sku="a", stock=6), await product(pool, sku="b", stock=4)
    now = Sightings().now()

    def wanted(caller: Caller, *lines: tuple[int, int]) -> tuple[Wanted, list[Line]]:
        ordered = [Line(i, pid, qty, 100) for i, (pid, qty) in enumerate(lines)]
        return Wanted(caller, order(*lines), None, "h", now), ordered

    fitting = [wanted(ALICE, (a, 2), (b, 1)), wanted(BOB, (a, 1)), wanted(CAROL, (a, 2), (b, 3))]
    async with pool.acquire() as conn, in_transaction(conn, ends_itself=True) as cur:
        before = await _savepoints(cur)
        placed = await commit_orders(cur, fitting)
        assert await _savepoints(cur) == before
    assert all(isinstance(p, Order) for p in placed)
    ids = [p.id for p in placed if isinstance(p, Order)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    states = {state.product_id: state for state in await audit(pool, [a, b])}
    assert (states[a].stock, states[b].stock) == (1, 0) and all(s.holds for s in states.values())

    over = [wanted(ALICE, (a, 1)), wanted(BOB, (a, 1))]  # 2 wanted, 1 left: the first gets it
    async with pool.acquire() as conn, in_transaction(conn, ends_itself=True) as cur:
        before = await _savepoints(cur)
        first, second = await commit_orders(cur, over)
        assert await _savepoints(cur) == before + 2
    assert isinstance(first, Order) and isinstance(second, OutOfStock) and second.available == 0
    (state,) = await audit(pool, [a])
    assert state.stock == 0 and state.holds


async def test_unknown_product_is_404_naming_the_item(pool: aiomysql.Pool) -> None:
    pid = await product(pool)
    with pytest.raises(UnknownProduct) as err:
        await place_order(pool, ALICE, order((pid, 1), (pid + 1000, 1)), None)
    error = http_error(err.value)
    assert error.status == 404 and list(error.errors) == ["items[1].product_id"]


async def test_a_product_listed_twice_is_422(pool: aiomysql.Pool) -> None:
    pid = await product(pool)
    with pytest.raises(DuplicateLine) as err:
        await place_order(pool, ALICE, order((pid, 1), (pid, 2)), None)
    error = http_error(err.value)
    assert error.status == 422 and list(error.errors) == ["items[1].product_id"]


async def test_a_read_made_while_queued_answers_409_without_a_query(pool: aiomysql.Pool) -> None:
    pid = await product(pool, stock=5)
    sightings = Sightings()
    sightings.note(pid, 0, sent_at=sightings.now() - 1)  # read before this request arrived: ignored
    assert not (await place_order(pool, ALICE, order((pid, 1)), None, sightings=sightings)).replayed
    # The order's own read just saw 5; a (pretend) later read saw none: that one answers.
    sightings.note(pid, 0, sent_at=sightings.now() + 1)
    with pytest.raises(OutOfStock) as err:
        await place_order(pool, BOB, order((pid, 1)), None, sightings=sightings)
    error = http_error(err.value)
    assert error.status == 409 and "0 available" in error.errors["items[0].quantity"][0]
    (state,) = await audit(pool, [pid])
    assert state.stock == 4 and state.holds


async def test_lock_wait_timeouts_are_retried_then_answered_with_503(pool: aiomysql.Pool) -> None:
    pid = await product(pool)
    holder = await pool.acquire()
    try:
        async with holder.cursor() as cur:
            await cur.execute("SELECT stock FROM products WHERE id = %s FOR UPDATE", (pid,))
        attempts = 0

        async def blocked_update() -> None:
            nonlocal attempts
            attempts += 1
            async with transaction(pool) as cur:
                await cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
                await cur.execute("UPDATE products SET stock = stock - 1 WHERE id = %s", (pid,))

        before = _retries("lock_timeout")
        with pytest.raises(Contention) as err:
            await with_lock_retry(blocked_update, attempts=2)
        error = http_error(err.value)
        assert error.status == 503 and error.headers == {"Retry-After": "1"}
        assert isinstance(err.value.__cause__, LockConflict)
        assert attempts == 2
        assert _retries("lock_timeout") == before + 1
    finally:
        await holder.rollback()
        pool.release(holder)


def _retries(reason: str) -> float:
    return metric_value(generate_latest(REGISTRY).decode(), "orders_lock_retries_total", reason=reason) or 0.0
