"""Placing orders: transactions that never oversell, made safe to retry by an idempotency key.

Two round trips. A plain (non-locking) read prices the lines and rejects those that visibly cannot
be served; what it saw also answers the requests queued behind it (``sightings``): when a flash sale
sells out, the other buyers get their 409 without a query of their own and without ever queueing for
the row lock. Then one server-side call (``place_orders_and_commit``, migration 0005) inserts the
order, its items and its outbox event, takes stock *last* with conditional ``UPDATE … WHERE stock >=
q``, and commits: the hot product row is locked only for the server's own work, never across a round
trip, and each order costs one network exchange for all its writes instead of one per statement.
The same call takes a whole batch of orders, each still with its own rows, event and idempotency
key: the API coalesces concurrent orders that way (``orders.batching``); :func:`place_one` is the
batch of one.

``Strategy "locking"`` is the naive baseline the benchmark measures against (and nothing else uses):
``SELECT … FOR UPDATE`` first, then the same writes, holding the lock for the whole transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import aiomysql
import orjson
import pymysql

from asynccore.auth import Caller
from asynccore.errors import ApiError
from orders import outbox
from orders.db import in_transaction, placeholders, transaction, with_lock_retry
from orders.inventory import Line, OutOfStock, lock_products
from orders.metrics import LOCK_WAIT, TRANSITIONS
from orders.models import NewOrder
from orders.sightings import Sightings
from orders.states import Status
from orders.store import Item, Order, fetch_orders

if TYPE_CHECKING:
    from orders.batching import Batcher

__all__ = [
    "DuplicateKey",
    "Placed",
    "Strategy",
    "UnknownProduct",
    "Wanted",
    "commit_orders",
    "place_one",
    "place_order",
    "price_lines",
    "read_stock",
]

Strategy = Literal["conditional", "locking"]
DUPLICATE_KEY = 1062


@dataclass(frozen=True, slots=True)
class Placed:
    order: Order
    replayed: bool  # True: the idempotency key matched an earlier order, nothing new was written


class UnknownProduct(Exception):
    def __init__(self, index: int, product_id: int) -> None:
        super().__init__(f"product {product_id} not found")
        self.index = index
        self.product_id = product_id


class DuplicateKey(Exception):
    """Another request with the same idempotency key committed first."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """One validated order request on its way to the database, and when it arrived."""

    caller: Caller
    request: NewOrder
    key: str | None
    request_hash: str
    arrived: float

    def product_ids(self) -> list[int]:
        return [line.product_id for line in self.request.items]


async def place_order(
    pool: aiomysql.Pool,
    caller: Caller,
    request: NewOrder,
    idempotency_key: str | None,
    *,
    strategy: Strategy = "conditional",
    lock_attempts: int = 4,
    sightings: Sightings | None = None,
    batcher: Batcher | None = None,
) -> Placed:
    """Create the order (201) or replay the one this key created; 404/409/422 name the item or field.

    ``sightings`` shares what stock reads found between concurrent requests, ``batcher`` coalesces
    concurrent orders into shared transactions (one of each per process; without a batcher every
    order has its own transaction).
    """
    duplicate = request.duplicate_line()
    if duplicate is not None:
        pid = request.items[duplicate].product_id
        raise ApiError(422, f"items[{duplicate}].product_id", f"product {pid} is listed twice")
    request_hash = hashlib.sha256(orjson.dumps(request.model_dump())).hexdigest()
    shared = sightings or Sightings()
    wanted = Wanted(caller, request, idempotency_key, request_hash, shared.now())

    async def attempt() -> Order:
        if strategy == "locking":
            return await _place_locking(pool, caller, request, idempotency_key, request_hash)
        if batcher is not None:
            return await batcher.place(wanted)
        return await place_one(pool, shared, wanted)

    try:
        order = await with_lock_retry(attempt, attempts=lock_attempts)
    except (OutOfStock, UnknownProduct, DuplicateKey) as exc:
        # A key that already made an order replays it, whatever the stock or catalogue says now.
        if idempotency_key is not None:
            earlier = await _by_key(pool, caller.user_id, idempotency_key)
            if earlier is not None:
                return _replay(earlier, request_hash)
        if isinstance(exc, OutOfStock):
            line = exc.line
            left = "" if exc.available is None else f", {exc.available} available"
            raise ApiError(
                409,
                f"items[{line.index}].quantity",
                f"product {line.product_id} is out of stock: {line.quantity} requested{left}",
            ) from None
        if isinstance(exc, UnknownProduct):
            raise ApiError(404, f"items[{exc.index}].product_id", str(exc)) from None
        raise ApiError(
            409, "Idempotency-Key", "a request with this key is still in progress; retry"
        ) from None
    TRANSITIONS.labels(Status.PENDING.value).inc()
    return Placed(order, replayed=False)


async def place_one(pool: aiomysql.Pool, sightings: Sightings, wanted: Wanted) -> Order:
    """One order in its own transaction: the stock read, then :func:`commit_orders` for it alone."""
    async with pool.acquire() as conn:
        # While we queued for this connection, another request's read may already have shown the
        # stock too low: that read happened after we arrived, so it answers us without a query.
        short = sightings.short_line(wanted.request, since=wanted.arrived)
        if short is not None:
            index, stock = short
            item = wanted.request.items[index]
            raise OutOfStock(Line(index, item.product_id, item.quantity, 0), stock)
        async with in_transaction(conn, ends_itself=True) as cur:
            seen = await read_stock(cur, sightings, wanted.product_ids())
            lines = price_lines(wanted.request, seen)
            (placed,) = await commit_orders(cur, [(wanted, lines)])
        if isinstance(placed, OutOfStock):
            raise placed
        return placed


async def read_stock(
    cur: aiomysql.Cursor, sightings: Sightings, product_ids: Collection[int]
) -> dict[int, tuple[int, int]]:
    """``{id: (price_cents, stock)}`` by a plain (non-locking) read, noted in ``sightings``."""
    sent_at = sightings.now()
    await cur.execute(
        f"SELECT id, price_cents, stock FROM products WHERE id IN ({placeholders(len(product_ids))})",  # noqa: S608
        list(product_ids),
    )
    seen = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
    for product_id, (_, stock) in seen.items():
        sightings.note(product_id, stock, sent_at)
    return seen


async def commit_orders(
    cur: aiomysql.Cursor, batch: Sequence[tuple[Wanted, list[Line]]]
) -> list[Order | OutOfStock]:
    """Write every order with its items and event, take each one's stock, COMMIT: one ``CALL``.

    ``place_orders_and_commit`` (migration 0005) inserts all the rows first, then locks the batch's
    product rows in ascending id order and takes each order's stock with conditional UPDATEs, undoing
    just the orders that do not fit (their :class:`OutOfStock` is in their place in the result);
    the hot rows are locked only inside the server, after the inserts. A duplicate idempotency key
    fails the whole call before any product row is touched (:class:`DuplicateKey`).
    """
    orders = [_new_order(wanted.caller, lines, order_id=0) for wanted, lines in batch]
    rows = []
    for (wanted, _), order in zip(batch, orders, strict=True):
        event_id, _, payload, request_id = outbox.row("order.created", order.event(Status.PENDING))
        rows.append(
            (
                wanted.caller.user_id,
                wanted.caller.username,
                order.total_cents,
                wanted.key,
                wanted.request_hash if wanted.key else None,
                order.created_at.isoformat(sep=" "),
                [(item.product_id, item.quantity, item.price_cents) for item in order.items],
                event_id,  # the server assigns the order id and JSON_SETs it into the payload
                payload,
                request_id,
            )
        )
    ordered = [sorted(lines, key=lambda line: line.product_id) for _, lines in batch]
    products = sorted({line.product_id for lines in ordered for line in lines})
    takes = [[(line.product_id, line.quantity) for line in lines] for lines in ordered]
    started = time.perf_counter()
    with _duplicate_key():
        await cur.execute(
            "CALL place_orders_and_commit(%s, %s, %s)",
            (
                orjson.dumps(rows).decode(),
                orjson.dumps(takes).decode(),
                orjson.dumps(products).decode(),
            ),
        )
    ((results,),) = await cur.fetchall()
    while await cur.nextset():  # the CALL's own status, sent after the COMMIT: must be read
        pass
    LOCK_WAIT.observe(time.perf_counter() - started)
    placed: list[Order | OutOfStock] = []
    for order, lines, (order_id, short, stock) in zip(orders, ordered, orjson.loads(results), strict=True):
        placed.append(replace(order, id=order_id) if short < 0 else OutOfStock(lines[short], stock))
    return placed


async def _place_locking(
    pool: aiomysql.Pool, caller: Caller, request: NewOrder, key: str | None, request_hash: str
) -> Order:
    async with transaction(pool) as cur:
        locked = await lock_products(cur, [line.product_id for line in request.items])
        lines = price_lines(request, locked)
        for line in sorted(lines, key=lambda line: line.product_id):
            await cur.execute(
                "UPDATE products SET stock = stock - %s WHERE id = %s", (line.quantity, line.product_id)
            )
        order = await _write_order(cur, caller, lines, key, request_hash)
    return order


def price_lines(request: NewOrder, products: dict[int, tuple[int, int]]) -> list[Line]:
    """Request lines priced from ``products`` (``{id: (price_cents, stock)}``); unknown ids fail first,
    then lines the seen stock cannot cover."""
    for index, item in enumerate(request.items):
        if item.product_id not in products:
            raise UnknownProduct(index, item.product_id)
    lines = [
        Line(index, item.product_id, item.quantity, products[item.product_id][0])
        for index, item in enumerate(request.items)
    ]
    for line in lines:
        if products[line.product_id][1] < line.quantity:
            raise OutOfStock(line, products[line.product_id][1])
    return lines


@contextlib.contextmanager
def _duplicate_key() -> Iterator[None]:
    """The orders INSERT hit the (user, idempotency key) unique index: :class:`DuplicateKey`."""
    try:
        yield
    except pymysql.err.IntegrityError as exc:
        if exc.args[0] == DUPLICATE_KEY:
            raise DuplicateKey from exc
        raise


def _new_order(caller: Caller, lines: list[Line], *, order_id: int) -> Order:
    """The new ``pending`` order for ``lines``, items in ascending product id order (as stored)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    items = tuple(
        Item(line.product_id, line.quantity, line.price_cents)
        for line in sorted(lines, key=lambda line: line.product_id)
    )
    return Order(
        id=order_id,
        user_id=caller.user_id,
        username=caller.username,
        status=Status.PENDING,
        total_cents=sum(item.quantity * item.price_cents for item in items),
        items=items,
        payment_ref=None,
        email_sent=False,
        created_at=now,
        updated_at=now,
    )


async def _write_order(
    cur: aiomysql.Cursor, caller: Caller, lines: list[Line], key: str | None, request_hash: str
) -> Order:
    """Baseline: INSERT the order, its items and its ``order.created`` event, a round trip each."""
    order = _new_order(caller, lines, order_id=0)
    with _duplicate_key():
        await cur.execute(
            "INSERT INTO orders (user_id, username, status, total_cents, idempotency_key, request_hash, "
            "created_at, updated_at) VALUES (%s, %s, 'pending', %s, %s, %s, %s, %s)",
            (
                caller.user_id,
                caller.username,
                order.total_cents,
                key,
                request_hash if key else None,
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


async def _by_key(pool: aiomysql.Pool, user_id: str, key: str) -> tuple[Order, str] | None:
    async with transaction(pool) as cur:
        await cur.execute(
            "SELECT id, request_hash FROM orders WHERE user_id = %s AND idempotency_key = %s", (user_id, key)
        )
        row = await cur.fetchone()
        if row is None:
            return None
        found = await fetch_orders(cur, "id = %s", (row[0],))
    return found[0], row[1]


def _replay(earlier: tuple[Order, str], request_hash: str) -> Placed:
    order, earlier_hash = earlier
    if earlier_hash != request_hash:
        raise ApiError(422, "Idempotency-Key", "was already used with a different request body")
    return Placed(order, replayed=True)
