"""The transactional outbox: events are rows written in the order's own transaction, relayed later.

Nothing is published for a rolled-back order (its outbox row rolled back with it), and nothing committed
is lost when RabbitMQ or the relay dies (the row stays unsent until a relay publishes it and marks it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiomysql
import orjson

from asynccore.logs import current_request_id
from orders.db import placeholders, transaction
from orders.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE

__all__ = ["Event", "Publish", "Sink", "add", "drain", "purge_sent", "refresh_gauges", "row"]

log = logging.getLogger("orders.outbox")


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    routing_key: str
    payload: dict[str, Any]
    request_id: str | None = None


Publish = Callable[[Sequence[Event]], Awaitable[None]]


def row(routing_key: str, payload: dict[str, Any]) -> tuple[str, str, str, str | None]:
    """``(event_id, routing_key, payload JSON, request_id)``: an outbox row's values, for callers that
    insert it themselves (``placement`` does, inside its one server-side call)."""
    return uuid.uuid4().hex, routing_key, orjson.dumps(payload).decode(), current_request_id()


async def add(cur: aiomysql.Cursor, events: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Queue ``(routing_key, payload)`` events in the caller's transaction (one multi-row INSERT)."""
    if not events:
        return
    await cur.executemany(
        "INSERT INTO outbox (event_id, routing_key, payload, request_id, created_at) "
        "VALUES (%s, %s, %s, %s, UTC_TIMESTAMP(6))",
        [row(key, payload) for key, payload in events],
    )


Sink = Literal["sent_at", "streamed_at"]


async def drain(pool: aiomysql.Pool, publish: Publish, *, batch: int, sink: Sink = "sent_at") -> int:
    """Publish rows not yet delivered to ``sink`` oldest first and mark them; returns how many went out.

    ``sink`` is the column that records delivery: ``sent_at`` for RabbitMQ, ``streamed_at`` for Kafka,
    so one being down never holds the other back.

    Rows are claimed with ``FOR UPDATE SKIP LOCKED``, so relays in several API replicas share the work
    without publishing a row twice concurrently. ``publish`` returns only once the broker confirmed
    every event; if it raises, the transaction rolls back and the rows are retried on the next run
    (consumers are idempotent, so a re-publish after a crash between confirm and commit is harmless).
    """
    total = 0
    while True:
        async with transaction(pool) as cur:
            # READ COMMITTED: lock the claimed rows only. Under REPEATABLE READ this scan would also
            # gap-lock the end of the index, where every new order inserts its event, stalling
            # order placement for as long as the broker takes to confirm.
            await cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            await cur.execute(
                f"SELECT id, event_id, routing_key, payload, request_id FROM outbox WHERE {sink} IS NULL "  # noqa: S608
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (batch,),
            )
            rows = await cur.fetchall()
            if not rows:
                return total
            await publish([Event(row[1], row[2], orjson.loads(row[3]), row[4]) for row in rows])
            ids = [row[0] for row in rows]
            await cur.execute(
                f"UPDATE outbox SET {sink} = UTC_TIMESTAMP(6) WHERE id IN ({placeholders(len(ids))})",  # noqa: S608
                ids,
            )
        total += len(rows)
        if len(rows) < batch:
            return total
        await asyncio.sleep(0)  # let requests in between full batches


async def refresh_gauges(pool: aiomysql.Pool) -> None:
    """Backlog size and age of the oldest unsent row, for the outbox alert."""
    async with transaction(pool) as cur:
        await cur.execute(
            "SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, MIN(created_at), UTC_TIMESTAMP(6)) "
            "FROM outbox WHERE sent_at IS NULL"
        )
        count, age_us = await cur.fetchone()
    OUTBOX_BACKLOG.set(count)
    OUTBOX_OLDEST_AGE.set((age_us or 0) / 1e6)


async def purge_sent(pool: aiomysql.Pool, *, older_than_s: float, limit: int = 1000) -> int:
    """Delete rows sent more than ``older_than_s`` ago, a bounded batch at a time."""
    async with transaction(pool) as cur:
        return int(
            await cur.execute(
                "DELETE FROM outbox WHERE sent_at < UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND LIMIT %s",
                (int(older_than_s * 1e6), limit),
            )
        )
