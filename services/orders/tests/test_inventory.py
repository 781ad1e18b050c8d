"""The core: never oversell, under 1,000 concurrent buyers, with single- and multi-item orders.

Each runs three ways: ``locking`` (the benchmark's naive baseline, ``loadtests.bench.orders_naive``),
``conditional`` (an order per transaction, :class:`Placer`) and ``batched`` (conditional, concurrent
orders coalesced by a :class:`Batcher`, as the API runs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

import aiomysql
import pytest

from asynccore.auth import Caller
from loadtests.bench.orders_naive import NaivePlacer
from orders.api import http_error
from orders.batching import Batcher, Placer
from orders.errors import OrdersError
from orders.inventory import audit
from orders.lifecycle import move
from orders.models import NewOrder, NewProduct, OrderLine
from orders.products import create_product, restock
from orders.sightings import Sightings
from orders.states import Status
from orders.store import list_orders

BUYERS = 1000
Mode = Literal["locking", "conditional", "batched"]
MODES = ["locking", "conditional", "batched"]


@contextlib.asynccontextmanager
async def _placing(
    pool: aiomysql.Pool, mode: Mode
) -> AsyncIterator[Callable[[int, NewOrder], Awaitable[int]]]:
    """``buy(buyer, order)`` → the HTTP status placing it would answer, in ``mode``."""
    shared = Sightings()  # as in the API: buyers queued behind a sold-out read are answered from it
    placer = {
        "locking": lambda: NaivePlacer(pool, shared),
        "conditional": lambda: Placer(pool, shared),
        "batched": lambda: Batcher(pool, shared, max_batch=50, in_flight=4, max_waiting=10_000),
    }[mode]()

    async def buy(buyer: int, order: NewOrder) -> int:
        caller = Caller(str(buyer), f"buyer{buyer}", "")
        try:
            await placer.place_order(caller, order, None)
        except OrdersError as exc:
            return http_error(exc).status
        return 201

    try:
        yield buy
    finally:
        await placer.close()


def _order(lines: list[tuple[int, int]]) -> NewOrder:
    return NewOrder(items=[OrderLine(product_id=pid, quantity=qty) for pid, qty in lines])


async def _product(pool: aiomysql.Pool, stock: int, sku: str = "hot") -> int:
    product = await create_product(pool, NewProduct(sku=sku, name=sku, price_cents=1999, stock=stock))
    return product.id


@pytest.mark.parametrize("mode", MODES)
async def test_flash_sale_sells_exactly_the_stock(pool: aiomysql.Pool, mode: Mode) -> None:
    product = await _product(pool, stock=100)

    async with _placing(pool, mode) as buy:
        outcomes = Counter(await asyncio.gather(*(buy(b, _order([(product, 1)])) for b in range(BUYERS))))

    assert outcomes == {201: 100, 409: BUYERS - 100}
    (state,) = await audit(pool, [product])
    assert state.stock == 0 and state.held == 100 and state.holds, state


@pytest.mark.parametrize("mode", MODES)
async def test_multi_item_orders_never_oversell_any_product(pool: aiomysql.Pool, mode: Mode) -> None:
    stocks = {await _product(pool, stock=s, sku=f"p{s}"): s for s in (40, 60, 80)}
    ids = sorted(stocks)
    rng = random.Random(4)
    # Each buyer wants 1-3 units of a random 2 or 3 of the products, listed in random order: lock order
    # must come from the ids, not from the request, or these would deadlock.
    baskets = [
        [(pid, rng.randint(1, 3)) for pid in rng.sample(ids, rng.randint(2, 3))] for _ in range(BUYERS)
    ]

    async with _placing(pool, mode) as buy:
        outcomes = await asyncio.gather(*(buy(b, _order(basket)) for b, basket in enumerate(baskets)))

    assert set(outcomes) <= {201, 409}
    assert outcomes.count(201) > 0
    states = await audit(pool, ids)
    assert all(state.holds for state in states), states
    # Sold out means someone was refused for that product: nobody got more than there was.
    for state in states:
        assert state.stock >= 0
        assert state.held <= stocks[state.product_id]


@pytest.mark.parametrize("mode", MODES)
async def test_invariant_holds_through_restocks_and_cancellations(pool: aiomysql.Pool, mode: Mode) -> None:
    product = await _product(pool, stock=50)
    placed_ids: list[int] = []

    async with _placing(pool, mode) as buy:

        async def buy_and_maybe_cancel(buyer: int) -> None:
            if await buy(buyer, _order([(product, 2)])) != 201:
                return
            if buyer % 3 == 0:
                placed = await list_orders(pool, str(buyer), limit=1, before=None)
                placed_ids.append(placed[0].id)
                await move(pool, placed[0].id, Status.CANCELLED, owner=str(buyer))

        async def restocker() -> None:
            for _ in range(5):
                await restock(pool, product, 10)
                await asyncio.sleep(0.01)

        await asyncio.gather(restocker(), *(buy_and_maybe_cancel(b) for b in range(300)))

    (state,) = await audit(pool, [product])
    assert state.restocked == 50
    assert placed_ids and state.holds, state
