"""Placing orders as the API does: :class:`Placer`, the entry every order takes, and :class:`Batcher`,
which coalesces concurrent orders into shared transactions (how a flash sale's hot row keeps up).

The flow runs one way, api → batching → placement: :meth:`Placer.place_order` validates the request,
places it (retrying lock conflicts), replays the earlier order of an idempotency key that already made
one, and counts the outcome; the database work itself is ``orders.placement``'s.

Profiling the per-order transaction showed where the time goes under load: not the row lock (the
conditional UPDATE holds it only inside the server), but the fixed cost of each transaction — two
network round trips through aiomysql in the API process, statement dispatch and a commit in
MariaDB — all on the same few cores as the HTTP work. A :class:`Batcher` pays that cost once for
many orders: while ``in_flight`` batches are running, new orders wait in a queue, and the next batch
takes up to ``max_batch`` of them. One non-locking read prices them all; one ``CALL`` writes each
order's own row, items and outbox event, then locks the batch's product rows (ascending ids) and
takes each order's stock in turn with conditional UPDATEs, undoing only the orders that do not fit,
and commits (:func:`placement.commit_orders`). Under light load a batch is one order, started at
once, so nothing waits for company.

Each order gets the answer it would get alone: the read refuses only what it shows short or unknown
(it was sent after the order arrived), and the stock is decided per order under the row lock. Two
orders with the same idempotency key never share a batch (the second goes alone, after the first);
if a batch fails as a whole — a key some earlier request already used, a lock conflict — it rolls
back entirely and each of its orders is placed on its own (:func:`placement.place_one`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from dataclasses import dataclass

import aiomysql

from asynccore.auth import Caller
from orders.db import LockConflict, in_transaction, with_lock_retry
from orders.errors import KeyInProgress, KeyReused, OrdersError, OutOfStock, UnknownProduct
from orders.metrics import BATCH_SIZE, STOCKOUTS, TRANSITIONS
from orders.models import Line, NewOrder
from orders.placement import (
    DuplicateKey,
    Placed,
    Refused,
    Wanted,
    commit_orders,
    earlier_order,
    orders_made,
    place_one,
    price_lines,
    read_stock,
    replay,
)
from orders.sightings import Sightings
from orders.states import Status

__all__ = ["Batcher", "Placer"]

CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class _Waiting:
    wanted: Wanted
    result: asyncio.Future[Placed]


class Placer:
    """Places each order in a transaction of its own. ``sightings`` shares what stock reads found
    between concurrent requests (one per process)."""

    def __init__(self, pool: aiomysql.Pool, sightings: Sightings, *, lock_attempts: int = 4) -> None:
        self.pool = pool
        self.sightings = sightings
        self.lock_attempts = lock_attempts

    async def place_order(self, caller: Caller, request: NewOrder, key: str | None) -> Placed:
        """The new order, or the one ``key`` made earlier; the domain's refusal otherwise
        (``orders.errors``: unknown product, out of stock, key reused or in progress, contention)."""
        wanted = Wanted.of(caller, request, key, self.sightings.now())
        refusal: OrdersError
        try:
            placed = await with_lock_retry(lambda: self.place(wanted), attempts=self.lock_attempts)
        except Refused as exc:  # decided with the key looked up: it made no order to replay
            refusal = exc.error
        except (OutOfStock, UnknownProduct, DuplicateKey) as exc:
            # A key that already made an order replays it, whatever the stock or catalogue says now.
            earlier = await earlier_order(self.pool, wanted)
            if earlier is not None:
                return earlier
            refusal = KeyInProgress() if isinstance(exc, DuplicateKey) else exc
        else:
            if not placed.replayed:
                TRANSITIONS.labels(Status.PENDING.value).inc()
            return placed
        if isinstance(refusal, OutOfStock):
            STOCKOUTS.inc()
        raise refusal

    async def place(self, wanted: Wanted) -> Placed:
        """One attempt at placing ``wanted``; what :func:`placement.place_one` raises for it."""
        return Placed(await place_one(self.pool, self.sightings, wanted), replayed=False)

    async def close(self) -> None:
        """Nothing to finish: every order was placed by its own caller."""


class Batcher(Placer):
    """Per process: orders queue here and are placed in batches, ``in_flight`` batches at a time.

    ``max_waiting`` bounds the queue; an order arriving when it is full is placed on its own.
    """

    def __init__(
        self,
        pool: aiomysql.Pool,
        sightings: Sightings,
        *,
        max_batch: int,
        in_flight: int,
        max_waiting: int,
        lock_attempts: int = 4,
    ) -> None:
        super().__init__(pool, sightings, lock_attempts=lock_attempts)
        self.max_batch = max_batch
        self.in_flight = in_flight
        self.max_waiting = max_waiting
        self._waiting: deque[_Waiting] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self._claimed: Counter[int] = Counter()  # product id → units in CALLs not yet returned
        self._deferred: list[_Waiting] = []  # held back until one of those CALLs returns
        self._closed = False

    @property
    def queued(self) -> int:
        """Orders waiting for a batch."""
        return len(self._waiting)

    @property
    def held_back(self) -> int:
        """Orders waiting for a running batch's claims to return before they are read again."""
        return len(self._deferred)

    @property
    def running(self) -> int:
        """Batches in flight."""
        return len(self._running)

    async def place(self, wanted: Wanted) -> Placed:
        """The placed order (or the one its key made, when the read refused it), or what
        :func:`placement.place_one` would raise for it.

        If the caller stops waiting (its request timed out), an order not yet in a batch is dropped;
        one already sent to the server may still commit, as a lone order's COMMIT may race a timeout.
        """
        if self._closed or len(self._waiting) >= self.max_waiting:
            return await super().place(wanted)
        waiting = _Waiting(wanted, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._start()
        return await waiting.result

    async def close(self) -> None:
        """Stop batching; let the running batches finish (their callers are waiting for them)."""
        self._closed = True
        if self._running:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.wait(self._running)
            for task in self._running:
                task.cancel()
        for waiting in [*self._waiting, *self._deferred]:  # nobody will batch them now
            waiting.result.cancel()
        self._waiting.clear()
        self._deferred.clear()

    def _start(self) -> None:
        while self._waiting and len(self._running) < self.in_flight and not self._closed:
            batch: list[_Waiting] = []
            while self._waiting and len(batch) < self.max_batch:
                waiting = self._waiting.popleft()
                if not waiting.result.done():  # its caller may have given up already
                    batch.append(waiting)
            if batch:
                task = asyncio.create_task(self._run(batch), name="orders-batch")
                self._running.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start()

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            try:
                alone = await self._place_batch(batch)
            except (DuplicateKey, LockConflict):
                alone = batch  # the whole batch rolled back: each order tries again on its own
            await asyncio.gather(*(self._place_alone(waiting) for waiting in alone))
        except Exception as exc:  # the connection or the server failed: as a lone order would
            for waiting in batch:
                _settle(waiting, exc)
        except BaseException:  # cancelled (close): nobody may be left waiting forever
            for waiting in batch:
                waiting.result.cancel()
            raise

    async def _place_batch(self, batch: list[_Waiting]) -> list[_Waiting]:
        """Place the batch in one transaction; returns the orders left to place alone.

        The read cannot see what running batches are about to take, so an order that fits the read
        only if their claims all fail is held back until one of them returns, then read again:
        sending it now would mostly write its rows just for the server to undo them.
        """
        alone: list[_Waiting] = []
        refused: list[tuple[_Waiting, OutOfStock | UnknownProduct]] = []
        accepted: list[_Waiting] = []
        priced: list[tuple[Wanted, list[Line]]] = []
        keys: set[tuple[str, str]] = set()
        async with self.pool.acquire() as conn, in_transaction(conn, ends_itself=True) as cur:
            ids = {pid for waiting in batch for pid in waiting.wanted.product_ids()}
            seen = await read_stock(cur, self.sightings, ids)
            left = {pid: stock - self._claimed[pid] for pid, (_, stock) in seen.items()}
            for waiting in batch:
                wanted = waiting.wanted
                try:
                    lines = price_lines(wanted.request, seen)
                except (UnknownProduct, OutOfStock) as exc:
                    refused.append((waiting, exc))
                    continue
                if any(left[line.product_id] < line.quantity for line in lines):
                    self._deferred.append(waiting)
                    continue
                if wanted.key is not None:
                    if (wanted.caller.user_id, wanted.key) in keys:
                        alone.append(waiting)  # after this batch, it finds the first one's order
                        continue
                    keys.add((wanted.caller.user_id, wanted.key))
                for line in lines:
                    left[line.product_id] -= line.quantity
                accepted.append(waiting)
                priced.append((wanted, lines))
            if refused:
                await _refuse(cur, refused)
            if not priced:
                await conn.rollback()  # end the read's transaction: no CALL will end it
                return alone
            BATCH_SIZE.observe(len(priced))
            claims = Counter[int]()
            for _, lines in priced:
                claims.update({line.product_id: line.quantity for line in lines})
            self._claimed.update(claims)
            try:
                outcomes = await commit_orders(cur, priced)
            finally:
                self._claimed.subtract(claims)
                self._claimed = +self._claimed  # drop the zeros
                self._waiting.extendleft(reversed(self._deferred))  # to be read again, first
                self._deferred.clear()
                self._start()
        for waiting, outcome in zip(accepted, outcomes, strict=True):
            # A refusal of the CALL's: it had inserted the key, so the key made no order before.
            _settle(
                waiting,
                Refused(outcome) if isinstance(outcome, OutOfStock) else Placed(outcome, replayed=False),
            )
        return alone

    async def _place_alone(self, waiting: _Waiting) -> None:
        if waiting.result.done():
            return
        try:
            order = await place_one(self.pool, self.sightings, waiting.wanted)
        except Exception as exc:
            _settle(waiting, exc)
        else:
            _settle(waiting, Placed(order, replayed=False))


async def _refuse(cur: aiomysql.Cursor, refused: list[tuple[_Waiting, OutOfStock | UnknownProduct]]) -> None:
    """Answer the orders the batch's read refused, their keys looked up in its transaction (one query
    for them all, not a transaction each): a key that made an order replays it, whatever the stock
    says now; the others get their refusal as :class:`Refused`, so nobody looks their key up again."""
    made = await orders_made(cur, [waiting.wanted for waiting, _ in refused])
    for waiting, error in refused:
        try:
            placed = replay(waiting.wanted, made)
        except KeyReused as exc:
            _settle(waiting, exc)
            continue
        _settle(waiting, Refused(error) if placed is None else placed)


def _settle(waiting: _Waiting, outcome: Placed | Exception) -> None:
    """Hand ``waiting``'s caller its order or exception, unless it stopped waiting."""
    result = waiting.result
    if result.done():
        return
    if isinstance(outcome, BaseException):
        result.set_exception(outcome)
    else:
        result.set_result(outcome)
