"""RabbitMQ: the exchanges and queues orders use, and one robust connection that publishes with confirms.

Topology (every name carries ``AMQP_PREFIX``, so tests get their own)::

    <p>orders (topic, durable) ──order.created──▶ <p>orders.payments ──rejected──▶ <p>orders.dlx (fanout)
         ▲                                            │ failed attempt                      │
         └─────────────── TTL expires ◀── <p>orders.payments.retry ◀┘              <p>orders.payments.dlq

    <p>orders ──order.refund_requested──▶ <p>orders.refunds ──rejected──▶ <p>orders.refunds.dlx (fanout)
         ▲                                     │ failed attempt                          │
         └──────────── TTL expires ◀── <p>orders.refunds.retry ◀┘                 <p>orders.refunds.dlq

Each kind of work is a :class:`Lane`: its queue, the retry queue that feeds it again, and its own
dead letters (a dead-lettered refund is money owed to a customer: it must not hide among payments).

Every message is persistent and every publish waits for the broker's confirm, so "published" means
"on disk in a durable queue" (or dropped by design when no queue is bound to its routing key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
    ExchangeType,
)

from orders.outbox import Event
from orders.settings import OrdersSettings

__all__ = ["Broker", "Lane", "Names", "delete_topology"]

log = logging.getLogger("orders.messaging")

ATTEMPT_HEADER = "x-attempt"
WAITS_HEADER = "x-outage-waits"  # times a message waited for the provider without an attempt
REQUEST_ID_HEADER = "x-request-id"

Unsubscribe = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Lane:
    """One kind of work: the events (``routing_key``) its queue receives, where failed attempts wait
    (``retry``, then back to ``queue``), and where messages go that cannot be handled."""

    routing_key: str
    queue: str
    retry: str
    dead_letters: str
    dead_letter_exchange: str


@dataclass(frozen=True, slots=True)
class Names:
    exchange: str
    payments: str
    retry: str
    dead_letters: str
    dead_letter_exchange: str
    refunds: str
    refunds_retry: str
    refunds_dead_letters: str
    refunds_dead_letter_exchange: str

    @classmethod
    def with_prefix(cls, prefix: str) -> Names:
        return cls(
            exchange=f"{prefix}orders",
            payments=f"{prefix}orders.payments",
            retry=f"{prefix}orders.payments.retry",
            dead_letters=f"{prefix}orders.payments.dlq",
            dead_letter_exchange=f"{prefix}orders.dlx",
            refunds=f"{prefix}orders.refunds",
            refunds_retry=f"{prefix}orders.refunds.retry",
            refunds_dead_letters=f"{prefix}orders.refunds.dlq",
            refunds_dead_letter_exchange=f"{prefix}orders.refunds.dlx",
        )

    @property
    def payment_lane(self) -> Lane:
        return Lane("order.created", self.payments, self.retry, self.dead_letters, self.dead_letter_exchange)

    @property
    def refund_lane(self) -> Lane:
        return Lane(
            "order.refund_requested",
            self.refunds,
            self.refunds_retry,
            self.refunds_dead_letters,
            self.refunds_dead_letter_exchange,
        )

    @property
    def lanes(self) -> tuple[Lane, Lane]:
        return self.payment_lane, self.refund_lane


async def delete_topology(amqp_url: str, names: Names) -> None:
    """Delete the exchanges and queues named by ``names``: how tests and benchmarks clean up after a run."""
    connection = await aio_pika.connect(amqp_url, timeout=5)
    try:
        channel = await connection.channel()
        for lane in names.lanes:
            for queue in (lane.queue, lane.retry, lane.dead_letters):
                await channel.queue_delete(queue)
            await channel.exchange_delete(lane.dead_letter_exchange)
        await channel.exchange_delete(names.exchange)
    finally:
        await connection.close()


def message(event: Event) -> aio_pika.Message:
    headers: dict[str, Any] = {ATTEMPT_HEADER: 1}
    if event.request_id:
        headers[REQUEST_ID_HEADER] = event.request_id
    return aio_pika.Message(
        orjson.dumps(event.payload),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=event.event_id,
        type=event.routing_key,
        headers=headers,
    )


class Broker:
    """One robust connection and channel, opened on first use and re-opened by aio-pika after a loss.

    Opening lazily means the API starts (and takes orders) while RabbitMQ is down; the outbox keeps
    the events until :meth:`publish` can deliver them.
    """

    def __init__(
        self, url: str, names: Names, *, timeout_s: float, reconnect_s: float, prefetch: int = 0
    ) -> None:
        self.url = url
        self.names = names
        self.timeout_s = timeout_s
        self.reconnect_s = reconnect_s
        self.prefetch = prefetch
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queues: dict[str, AbstractRobustQueue] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: OrdersSettings, *, prefetch: int = 0) -> Broker:
        """The broker the API's relay (``prefetch`` 0: it only publishes) and the worker both use."""
        return cls(
            settings.amqp_url,
            Names.with_prefix(settings.amqp_prefix),
            timeout_s=settings.amqp_timeout_s,
            reconnect_s=settings.amqp_reconnect_s,
            prefetch=prefetch,
        )

    async def channel(self) -> AbstractRobustChannel:
        """The channel, with the topology declared; raises (within ``timeout_s``) while RabbitMQ is away."""
        async with self._lock:
            if self._channel is None:
                async with asyncio.timeout(self.timeout_s):
                    connection = await aio_pika.connect_robust(
                        self.url, timeout=self.timeout_s, reconnect_interval=self.reconnect_s
                    )
                    try:
                        channel = await connection.channel(publisher_confirms=True)
                        if self.prefetch:
                            await channel.set_qos(prefetch_count=self.prefetch)
                        await self._declare(channel)
                    except BaseException:
                        await connection.close()
                        raise
                self._connection, self._channel = connection, channel
            return self._channel

    @property
    def connected(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    async def _declare(self, channel: AbstractRobustChannel) -> None:
        """Every lane's queues, whoever connects first (the relay too: an event published before its
        queue exists would be dropped)."""
        exchange = await channel.declare_exchange(self.names.exchange, ExchangeType.TOPIC, durable=True)
        for lane in self.names.lanes:
            dlx = await channel.declare_exchange(lane.dead_letter_exchange, ExchangeType.FANOUT, durable=True)
            queue = await channel.declare_queue(
                lane.queue, durable=True, arguments={"x-dead-letter-exchange": lane.dead_letter_exchange}
            )
            await queue.bind(exchange, lane.routing_key)
            self._queues[lane.queue] = queue
            # Expired retries go back to the lane's queue through the default exchange.
            await channel.declare_queue(
                lane.retry,
                durable=True,
                arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": lane.queue},
            )
            dead = await channel.declare_queue(lane.dead_letters, durable=True)
            await dead.bind(dlx)

    async def consume(
        self, callbacks: Mapping[str, Callable[[AbstractIncomingMessage], Awaitable[Any]]]
    ) -> Unsubscribe:
        """Consume each queue named in ``callbacks`` (all or none); returns how to stop. aio-pika
        re-subscribes after a reconnect because the consumers sit on the queue objects the robust
        channel declared (and restores)."""
        await self.channel()
        tags: list[tuple[AbstractRobustQueue, str]] = []

        async def cancel() -> None:
            for queue, tag in tags:
                await queue.cancel(tag)

        try:
            for name, callback in callbacks.items():
                queue = self._queues[name]
                tags.append((queue, await queue.consume(callback)))
        except BaseException:
            with contextlib.suppress(Exception):  # the error that brought us here is the one to raise
                async with asyncio.timeout(self.timeout_s):
                    await cancel()
            raise
        return cancel

    async def publish(self, events: Sequence[Event]) -> None:
        """Publish outbox events to the orders exchange; returns once the broker confirmed them all."""
        channel = await self.channel()
        exchange = await channel.get_exchange(self.names.exchange, ensure=False)
        # Publish the batch concurrently and wait for every confirm; one failure cancels the rest.
        async with asyncio.timeout(self.timeout_s), asyncio.TaskGroup() as group:
            for event in events:
                group.create_task(
                    exchange.publish(
                        message(event),
                        routing_key=event.routing_key,
                        mandatory=False,
                    )
                )

    async def retry_later(
        self,
        failed: AbstractIncomingMessage,
        *,
        lane: Lane,
        attempt: int,
        delay_s: float,
        waits: int | None = None,
    ) -> None:
        """Park a failed message's copy in the lane's retry queue, back in its queue after ``delay_s``;
        ``waits`` (when given) is recorded in :data:`WAITS_HEADER`."""
        headers = {**(failed.headers or {}), ATTEMPT_HEADER: attempt}
        if waits is not None:
            headers[WAITS_HEADER] = waits
        channel = await self.channel()
        retry = aio_pika.Message(
            failed.body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=failed.message_id,
            type=failed.type,
            headers=headers,
            expiration=delay_s,
        )
        async with asyncio.timeout(self.timeout_s):
            await channel.default_exchange.publish(retry, routing_key=lane.retry, mandatory=False)

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            async with asyncio.timeout(self.timeout_s):
                await connection.close()
