"""Transactions on the aiomysql pool, and bounded retries of the ones that lose a lock conflict."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import aiomysql
import pymysql

from asynccore.resilience import retrying
from orders.errors import Contention
from orders.metrics import LOCK_RETRIES

__all__ = ["LockConflict", "in_transaction", "placeholders", "transaction", "with_lock_retry"]

T = TypeVar("T")

DEADLOCK = 1213
LOCK_WAIT_TIMEOUT = 1205
_REASONS = {DEADLOCK: "deadlock", LOCK_WAIT_TIMEOUT: "lock_timeout"}


class LockConflict(Exception):
    """InnoDB gave up on this transaction (deadlock victim or lock wait timeout); it is safe to rerun."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextlib.asynccontextmanager
async def transaction(pool: aiomysql.Pool, *, ends_itself: bool = False) -> AsyncIterator[aiomysql.Cursor]:
    """A cursor inside one transaction: committed when the block ends, rolled back when it raises.

    The pool's connections run with autocommit off, so even a read must end in commit/rollback: the
    pool only discards connections with uncommitted *writes*, and a read left open would keep its
    REPEATABLE READ snapshot into the next borrower's queries. ``ends_itself``: the block's last
    statement commits or rolls back inside the server (see ``placement.commit_orders``), so no COMMIT
    round trip follows it.
    """
    async with pool.acquire() as conn, in_transaction(conn, ends_itself=ends_itself) as cur:
        yield cur


@contextlib.asynccontextmanager
async def in_transaction(
    conn: aiomysql.Connection, *, ends_itself: bool = False
) -> AsyncIterator[aiomysql.Cursor]:
    """:func:`transaction` on a connection the caller already holds."""
    try:
        async with conn.cursor() as cur:
            yield cur
        if not ends_itself:
            await conn.commit()
    except BaseException as exc:
        await _abort(conn, exc)
        if isinstance(exc, pymysql.err.OperationalError) and exc.args[0] in _REASONS:
            raise LockConflict(_REASONS[exc.args[0]]) from exc
        raise


async def _abort(conn: aiomysql.Connection, exc: BaseException) -> None:
    """Roll back; a cancelled or broken connection is closed instead (the server then rolls back)."""
    if isinstance(exc, Exception):
        try:
            await conn.rollback()
            return
        except Exception:
            pass
    conn.close()


async def with_lock_retry(run: Callable[[], Awaitable[T]], *, attempts: int) -> T:
    """Run a whole transaction again (from its first statement) when InnoDB aborted it over a lock.

    Locks are always taken in ascending product id order, so deadlocks should not happen between
    orders; this covers the rest (lock wait timeouts under a long queue, gap locks on unique keys).
    After ``attempts`` it raises :class:`Contention` (a 503 the client may retry, never a 500). The
    first attempt runs without the retry machinery: almost every call needs no retry, and building a
    retryer per order cost the hot path several per cent of its CPU.
    """
    try:
        return await run()
    except LockConflict as exc:
        conflict = exc
    try:
        if attempts > 1:
            LOCK_RETRIES.labels(conflict.reason).inc()
            async for attempt in retrying(
                attempts=attempts - 1, initial_s=0.01, max_s=0.2, retry_on=LockConflict, name="orders_lock"
            ):
                with attempt:
                    try:
                        return await run()
                    except LockConflict as exc:
                        if attempt.retry_state.attempt_number < attempts - 1:
                            LOCK_RETRIES.labels(exc.reason).inc()
                        raise
    except LockConflict as exc:
        conflict = exc
    raise Contention(conflict.reason) from conflict


def placeholders(count: int) -> str:
    """``%s, %s, …`` for an ``IN (…)`` list: the values still travel as parameters, never as SQL text."""
    return ", ".join(["%s"] * count)
