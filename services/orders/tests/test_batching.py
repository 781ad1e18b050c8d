"""Batching: concurrent orders share transactions, and fall back to one by one whenever a batch fails."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import aiomysql
import pytest
from prometheus_client import REGISTRY, generate_latest

from asynccore.auth import Caller
from asynccore.migrations import apply_migrations
from asynccore.pools.mysql import close_mysql, open_mysql
from asynccore.testing import metric_value, wait_until
from orders.api import http_error
from orders.batching import Batcher
from orders.db import transaction
from orders.errors import OrdersError
from orders.inventory import audit
from orders.models import NewOrder, NewProduct, OrderLine
from orders.placement import Placed
from orders.products import create_product
from orders.resources import MIGRATIONS
from orders.sightings import Sightings


@pytest.fixture
async def batcher(pool: aiomysql.Pool) -> AsyncIterator[Batcher]:
    batcher = Batcher(pool, Sightings(), max_batch=50, in_flight=1, max_waiting=1000)
    yield batcher
    await batcher.close()


async def _product(pool: aiomysql.Pool, stock: int, sku: str = "p") -> int:
    return (await create_product(pool, NewProduct(sku=sku, name=sku, price_cents=500, stock=stock))).id


async def _buy(
    pool: aiomysql.Pool, batcher: Batcher, buyer: int, product: int, key: str | None = None, quantity: int = 1
) -> Placed | int:
    order = NewOrder(items=[OrderLine(product_id=product, quantity=quantity)])
    try:
        return await batcher.place_order(Caller(str(buyer), f"b{buyer}", ""), order, key)
    except OrdersError as exc:
        return http_error(exc).status


def _batches() -> tuple[float, float]:
    """(batched transactions so far, orders they carried)."""
    text = generate_latest(REGISTRY).decode()
    return metric_value(text, "orders_batch_size_count") or 0.0, metric_value(
        text, "orders_batch_size_sum"
    ) or 0.0


async def test_concurrent_orders_share_transactions(pool: aiomysql.Pool, batcher: Batcher) -> None:
    product = await _product(pool, stock=1000)
    batches, orders = _batches()

    placed = await asyncio.gather(*(_buy(pool, batcher, b, product) for b in range(200)))

    assert all(isinstance(p, Placed) for p in placed)
    ids = [p.order.id for p in placed if isinstance(p, Placed)]
    assert len(set(ids)) == 200
    after_batches, after_orders = _batches()
    assert after_orders - orders == 200
    assert after_batches - batches < 20  # one batch in flight: the rest queue up and go together
    (state,) = await audit(pool, [product])
    assert state.stock == 800 and state.held == 200 and state.holds


async def test_one_idempotency_key_twice_in_a_batch_makes_one_order(
    pool: aiomysql.Pool, batcher: Batcher
) -> None:
    product = await _product(pool, stock=10)
    # Same user, same key, same body, all queued together: one order, the others replay it.
    placed = await asyncio.gather(*(_buy(pool, batcher, 7, product, key="k") for _ in range(5)))

    assert all(isinstance(p, Placed) for p in placed)
    assert len({p.order.id for p in placed if isinstance(p, Placed)}) == 1
    assert sum(not p.replayed for p in placed if isinstance(p, Placed)) == 1
    (state,) = await audit(pool, [product])
    assert state.held == 1 and state.stock == 9


async def _waiting_at_a_row(pool: aiomysql.Pool) -> bool:
    """Whether a statement of this test's database is at a ``FOR UPDATE`` now (inside a CALL, the
    processlist shows the procedure's current statement): with the row held by the test, it waits.

    The processlist, not ``information_schema.innodb_trx``: that one needs the global PROCESS
    privilege, which the service user does not have; a user always sees its own threads.
    """
    async with transaction(pool) as cur:
        await cur.execute(
            "SELECT COUNT(*) FROM information_schema.processlist"
            " WHERE db = DATABASE() AND command = 'Query' AND id <> CONNECTION_ID()"
            " AND info LIKE '%FOR UPDATE'"
        )
        return int((await cur.fetchone())[0]) > 0


async def _lock_row(pool: aiomysql.Pool, product: int) -> aiomysql.Connection:
    conn = await pool.acquire()
    async with conn.cursor() as cur:
        await cur.execute("SELECT stock FROM products WHERE id = %s FOR UPDATE", (product,))
    return conn


@contextlib.asynccontextmanager
async def _one_batch_busy(pool: aiomysql.Pool, batcher: Batcher) -> AsyncIterator[None]:
    """While inside, the batcher's one batch in flight waits for a row lock, so orders placed now
    queue up and go together in the next batch, which starts on the way out."""
    plug_product = await _product(pool, stock=1, sku="plug")
    holder = await _lock_row(pool, plug_product)
    try:
        plug = asyncio.create_task(_buy(pool, batcher, 0, plug_product))
        await wait_until(lambda: batcher.queued == 0 and batcher.running == 1, timeout=5)
        yield
    finally:
        await holder.rollback()
        pool.release(holder)
    assert isinstance(await plug, Placed)


async def test_the_server_decides_each_order_of_a_batch(pool: aiomysql.Pool, batcher: Batcher) -> None:
    """A batch of 8 reads 10 in stock; before its UPDATEs, another buyer takes 5. The same call then
    places 5 of the 8 and refuses 3, each under the row lock."""
    product = await _product(pool, stock=10)
    holder = await _lock_row(pool, product)
    try:
        async with _one_batch_busy(pool, batcher):
            buys = asyncio.gather(*(_buy(pool, batcher, b, product) for b in range(1, 9)))
            await wait_until(lambda: batcher.queued == 8, timeout=5)
        await wait_until(lambda: _waiting_at_a_row(pool), timeout=10)  # the 8 at the row
        async with holder.cursor() as cur:
            await cur.execute("UPDATE products SET stock = stock - 5 WHERE id = %s", (product,))
        await holder.commit()
        outcomes = Counter(p if isinstance(p, int) else 201 for p in await buys)
    finally:
        await holder.rollback()
        pool.release(holder)

    assert outcomes == {201: 5, 409: 3}
    async with transaction(pool) as cur:
        await cur.execute("SELECT COUNT(*) FROM outbox")
        assert (await cur.fetchone())[0] == 1 + 5  # the plug's and the 5 placed: none for the refused
    (state,) = await audit(pool, [product])
    assert state.stock == 0 and state.held == 5  # + the 5 the bare UPDATE took = the initial 10


async def test_orders_the_running_batches_may_take_wait_for_them(pool: aiomysql.Pool) -> None:
    """A batch claiming the last 5 waits at the row; 3 more orders read 5 in stock, but would only
    fit if that batch failed: they are held back, not sent, and read again once it returns."""
    batcher = Batcher(pool, Sightings(), max_batch=50, in_flight=2, max_waiting=1000)
    product = await _product(pool, stock=5)
    holder = await _lock_row(pool, product)
    try:
        big = asyncio.create_task(_buy(pool, batcher, 0, product, quantity=5))
        await wait_until(lambda: _waiting_at_a_row(pool), timeout=10)
        batches, _ = _batches()
        late = asyncio.gather(*(_buy(pool, batcher, b, product) for b in range(1, 4)))
        await wait_until(lambda: batcher.held_back == 3, timeout=5)
        await holder.rollback()
        assert isinstance(await big, Placed)
        assert await late == [409, 409, 409]
    finally:
        await holder.rollback()
        pool.release(holder)
        await batcher.close()
    assert _batches()[0] == batches  # the 3 never went to the server: the read after refused them
    (state,) = await audit(pool, [product])
    assert state.stock == 0 and state.held == 5 and state.holds


async def test_a_batch_with_a_used_key_falls_back_to_one_by_one(
    pool: aiomysql.Pool, batcher: Batcher
) -> None:
    product = await _product(pool, stock=10)
    first = await _buy(pool, batcher, 1, product, key="k")
    assert isinstance(first, Placed)
    async with _one_batch_busy(pool, batcher):
        # Buyer 1 retries its request (same key) among 4 new buyers: its INSERT fails the batch.
        buys = asyncio.gather(*(_buy(pool, batcher, b, product, key="k") for b in range(1, 6)))
        await wait_until(lambda: batcher.queued == 5, timeout=5)
    placed = await buys

    assert all(isinstance(p, Placed) for p in placed)
    replayed = [p for p in placed if isinstance(p, Placed) and p.replayed]
    assert [p.order.id for p in replayed] == [first.order.id]
    (state,) = await audit(pool, [product])
    assert state.stock == 10 - 1 - 4 and state.holds


async def test_orders_the_read_refuses_are_answered_without_a_transaction_of_their_own(
    pool: aiomysql.Pool, batcher: Batcher
) -> None:
    product = await _product(pool, stock=0)
    batches, _ = _batches()

    outcomes = await asyncio.gather(*(_buy(pool, batcher, b, product) for b in range(50)))

    assert outcomes == [409] * 50
    assert _batches()[0] == batches  # no batch got as far as writing


async def _session_counters(pool: aiomysql.Pool) -> Counter[str]:
    """Com_select / Com_commit of the pool's one connection (the batcher's, between its batches)."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SHOW SESSION STATUS WHERE variable_name IN ('Com_select', 'Com_commit')")
        return Counter({name: int(value) for name, value in await cur.fetchall()})


async def test_keyed_orders_the_read_refuses_are_answered_in_its_transaction(mysql_url: str) -> None:
    """Sold out: the retry of an order that was placed gets that order, a key reused with another body
    its 422, every other keyed order its 409 — the keys looked up in the read's transaction, one
    query for the batch, not a transaction each. Refused keys made nothing: retried, they are 409 again."""
    pool = await open_mysql(mysql_url, maxsize=1)  # one connection: its session counters are the batcher's
    batcher = Batcher(pool, Sightings(), max_batch=100, in_flight=1, max_waiting=1000)
    try:
        await apply_migrations(mysql_url, MIGRATIONS)
        product = await _product(pool, stock=2)
        first = await _buy(pool, batcher, 1, product, key="k1")
        other = await _buy(pool, batcher, 2, product, key="k2")
        assert isinstance(first, Placed) and isinstance(other, Placed)
        before = await _session_counters(pool)

        retried = asyncio.gather(
            _buy(pool, batcher, 1, product, key="k1"),
            _buy(pool, batcher, 2, product, key="k2", quantity=2),  # same key, another body
            *(_buy(pool, batcher, b, product, key=f"k{b}") for b in range(10, 60)),
        )
        replay, reused, *refused = await retried
        spent = await _session_counters(pool) - before

        assert isinstance(replay, Placed) and replay.replayed and replay.order == first.order
        assert reused == 422 and refused == [409] * 50
        assert spent["Com_commit"] == 0  # nobody's key needed a transaction of its own
        assert (
            spent["Com_select"] <= 2 * 4
        )  # per batch (at most 2): stock, keys, the orders found, their items
        again = await asyncio.gather(*(_buy(pool, batcher, b, product, key=f"k{b}") for b in range(10, 60)))
        assert again == [409] * 50
        async with transaction(pool) as cur:
            await cur.execute("SELECT COUNT(*) FROM orders")
            assert (await cur.fetchone())[0] == 2
    finally:
        await batcher.close()
        await close_mysql(pool)


async def test_a_keyed_order_the_server_refuses_is_refused_again_when_retried(
    pool: aiomysql.Pool, batcher: Batcher
) -> None:
    """The read saw 1 for each of 3 keyed orders; the CALL places the first and refuses the others
    (their keys inserted, then undone): 409 without a lookup, and 409 again on retry, no order made."""
    product = await _product(pool, stock=1)
    async with _one_batch_busy(pool, batcher):
        buys = asyncio.gather(*(_buy(pool, batcher, b, product, key=f"k{b}") for b in range(1, 4)))
        await wait_until(lambda: batcher.queued == 3, timeout=5)
    placed, *refused = await buys
    assert isinstance(placed, Placed) and not placed.replayed and refused == [409, 409]

    again = await asyncio.gather(*(_buy(pool, batcher, b, product, key=f"k{b}") for b in range(1, 4)))
    assert isinstance(again[0], Placed) and again[0].replayed and again[0].order == placed.order
    assert again[1:] == [409, 409]
    async with transaction(pool) as cur:
        await cur.execute("SELECT idempotency_key FROM orders WHERE idempotency_key LIKE 'k%'")
        assert await cur.fetchall() == (("k1",),)


async def test_a_caller_that_stops_waiting_is_not_placed(pool: aiomysql.Pool, batcher: Batcher) -> None:
    product = await _product(pool, stock=10)
    holder = await _lock_row(pool, product)
    try:
        first = asyncio.create_task(_buy(pool, batcher, 1, product))  # its batch waits for the row
        await wait_until(lambda: batcher.running == 1, timeout=5)
        second = asyncio.create_task(_buy(pool, batcher, 2, product))  # queued behind that batch
        await wait_until(lambda: batcher.queued == 1, timeout=5)
        second.cancel()
        await holder.rollback()
        assert isinstance(await first, Placed)
        with pytest.raises(asyncio.CancelledError):
            await second
    finally:
        await holder.rollback()
        pool.release(holder)
    (state,) = await audit(pool, [product])
    assert state.held == 1 and state.stock == 9
