"""RabbitMQ: the exchanges and queues orders use, and one robust connection that publishes with confirms.

Topology (every name carries ``AMQP_PREFIX``, so tests get their own)::

    <p>orders (topic, durable) ──order.created──▶ <p>orders.payments ──rejected──▶ <p>orders.dlx (fanout)
         ▲                                            │ failed attempt                      │
         └─────────────── TTL expires ◀── <p>orders.payments.retry ◀┘              <p>orders.payments.dlq

Every message is persistent and every publish waits for the broker's confirm, so "published" means
"on disk in a durable queue" (or dropped by design when no queue is bound to its routing key).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
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

__all__ = ["Broker", "Names", "delete_topology"]

log = logging.getLogger("orders.messaging")

ATTEMPT_HEADER = "x-attempt"
REQUEST_ID_HEADER = "x-request-id"

Unsubscribe = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Names:
    exchange: str
    payments: str
    retry: str
    dead_letters: str
    dead_letter_exchange: str

    @classmethod
    def with_prefix(cls, prefix: str) -> Names:
        return cls(
            exchange=f"{prefix}orders",
            payments=f"{prefix}orders.payments",
            retry=f"{prefix}orders.payments.retry",
            dead_letters=f"{prefix}orders.payments.dlq",
            dead_letter_exchange=f"{prefix}orders.dlx",
        )


async def delete_topology(amqp_url: str, names: Names) -> None:
    """Delete the exchanges and queues named by ``names``: how tests and benchmarks clean up after a run."""
    connection = await aio_pika.connect(amqp_url, timeout=5)
    try:
        channel = await connection.channel()
        for queue in (names.payments, names.retry, names.dead_letters):
            await channel.queue_delete(queue)
        for exchange in (names.exchange, names.dead_letter_exchange):
            await channel.exchange_delete(exchange)
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
        self._payments: AbstractRobustQueue | None = None
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
        names = self.names
        exchange = await channel.declare_exchange(names.exchange, ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(names.dead_letter_exchange, ExchangeType.FANOUT, durable=True)
        payments = await channel.declare_queue(
            names.payments, durable=True, arguments={"x-dead-letter-exchange": names.dead_letter_exchange}
        )
        await payments.bind(exchange, "order.created")
        self._payments = payments
        # Expired retries go back to the payments queue through the default exchange.
        await channel.declare_queue(
            names.retry,
            durable=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": names.payments},
        )
        dead = await channel.declare_queue(names.dead_letters, durable=True)
        await dead.bind(dlx)

    async def consume(self, callback: Callable[[AbstractIncomingMessage], Awaitable[Any]]) -> Unsubscribe:
        """Consume the payments queue; returns how to stop. aio-pika re-subscribes after a reconnect
        because the consumer sits on the queue object the robust channel declared (and restores)."""
        await self.channel()
        queue = self._payments
        assert queue is not None
        tag = await queue.consume(callback)

        async def cancel() -> None:
            await queue.cancel(tag)

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

    async def retry_later(self, failed: AbstractIncomingMessage, *, attempt: int, delay_s: float) -> None:
        """Park a failed message's copy in the retry queue, back in the payments queue after ``delay_s``."""
        channel = await self.channel()
        retry = aio_pika.Message(
            failed.body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=failed.message_id,
            type=failed.type,
            headers={**(failed.headers or {}), ATTEMPT_HEADER: attempt},
            expiration=delay_s,
        )
        async with asyncio.timeout(self.timeout_s):
            await channel.default_exchange.publish(retry, routing_key=self.names.retry, mandatory=False)

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            async with asyncio.timeout(self.timeout_s):
                await connection.close()
