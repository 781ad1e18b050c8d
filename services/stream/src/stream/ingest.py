"""``POST /api/events``: validate a whole batch, then produce it — all or nothing on validation.

Produced with the app's idempotent producer, keyed by user so a user's events stay in one partition
(in order for the watermark, and on one consumer for sessions and risk counters). If Kafka fails
half-way, a client retry is safe: the consumer drops event ids it has already counted.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from asynccore.errors import ApiError
from stream.events import Event, Invalid, decode_ingest_batch, encode_event

__all__ = ["produce_events", "validate_events"]


def validate_events(body: bytes, max_future_ms: int) -> list[Event]:
    """The batch's events, or :class:`ApiError` 422 naming ``events[i].field``."""
    try:
        events = decode_ingest_batch(body, time.time_ns() // 1_000_000, max_future_ms)
    except Invalid as exc:
        raise ApiError(422, exc.field, exc.message) from None
    if not events:
        raise ApiError(422, "events", "must contain at least one event")
    return events


async def produce_events(
    producer: AIOKafkaProducer, topic: str, events: list[Event], timeout_s: float
) -> None:
    """Produce ``events`` and wait for every acknowledgement; 503 if Kafka does not take them in time."""
    try:
        async with asyncio.timeout(timeout_s):
            acks = [await producer.send(topic, encode_event(e), key=str(e.user_id).encode()) for e in events]
            await asyncio.gather(*acks)
    except (KafkaError, TimeoutError) as exc:
        raise ApiError(503, "kafka", f"events not accepted by Kafka: {type(exc).__name__}") from None
