"""Order events for the stream service's ``events`` topic (only when ``KAFKA_BOOTSTRAP`` is set).

The topic is created (``KAFKA_TOPIC_PARTITIONS`` partitions) if it does not exist yet, lazily with the
producer: orders may start before the stream service, which creates it too, and before Kafka answers.

``order.created`` becomes one ``order_placed`` event per line and ``order.paid`` one ``payment`` event
per line, built and encoded by the topic's schema (:mod:`contracts.events`, which the stream service
decodes with). Event ids derive from the outbox event id, so a re-relay after a crash produces the same
ids and the stream service drops the duplicates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from asynccore.kafka import ensure_topics
from contracts import events as wire
from orders.outbox import Event

__all__ = ["KafkaEvents", "stream_events"]

STREAM_TYPES: dict[str, wire.OrderEventType] = {"order.created": "order_placed", "order.paid": "payment"}


def stream_events(event: Event) -> list[wire.Event]:
    """The topic's events for one outbox event (none for the types analytics does not track)."""
    kind = STREAM_TYPES.get(event.routing_key)
    if kind is None:
        return []
    payload = event.payload
    lines = [
        wire.OrderLine(item["product_id"], item["quantity"], item["price_cents"]) for item in payload["items"]
    ]
    return wire.order_line_events(event.event_id, kind, payload["user_id"], payload["ts"], lines)


class KafkaEvents:
    """An idempotent producer, started on first use so the API starts while Kafka is away.

    The first use also creates ``topic`` with ``partitions`` when it does not exist (an existing topic
    is left as it is); until both succeed, every use tries again and the events wait in the outbox.
    """

    def __init__(self, bootstrap: str, topic: str, *, partitions: int, timeout_s: float) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                await ensure_topics(
                    self.bootstrap,
                    {self.topic: self.partitions},
                    timeout_s=self.timeout_s,
                    client_id="orders-admin",
                )
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    enable_idempotence=True,
                    acks="all",
                    request_timeout_ms=int(self.timeout_s * 1000),
                )
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def publish(self, events: Sequence[Event]) -> None:
        """Send the batch keyed by user (one user's events stay ordered) and wait for every ack."""
        records = [record for event in events for record in stream_events(event)]
        if not records:
            return
        producer = await self._started()
        async with asyncio.timeout(self.timeout_s):
            sent = [
                await producer.send(self.topic, wire.encode(record), key=str(record.user_id).encode())
                for record in records
            ]
            await asyncio.gather(*sent)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
