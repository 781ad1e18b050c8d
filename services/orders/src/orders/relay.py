"""The outbox relays and housekeeping that run inside every API replica as supervised periodic tasks.

Several replicas run them at once: outbox rows and expiring orders are claimed with ``SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from asynccore.app import CleanupCtx
from asynccore.tasks import Supervisor
from orders import outbox
from orders.lifecycle import expire_unpaid
from orders.messaging import Broker
from orders.resources import DB
from orders.settings import OrdersSettings
from orders.stream_events import KafkaEvents

__all__ = ["Relay", "background"]

log = logging.getLogger("orders.relay")

HOUSEKEEPING_INTERVAL_S = 5.0
JOB_TIMEOUT_S = 30.0  # aiomysql has no read timeout: every job is bounded as a whole


class Relay:
    """Drains the outbox into one sink; an outage is logged once, not every tick (the rows just wait)."""

    def __init__(
        self, app: web.Application, sink: outbox.Sink, publish: outbox.Publish, *, batch: int
    ) -> None:
        self.app = app
        self.sink = sink
        self.publish = publish
        self.batch = batch
        self.failing = False

    async def run_once(self) -> None:
        try:
            async with asyncio.timeout(JOB_TIMEOUT_S):
                sent = await outbox.drain(self.app[DB], self.publish, batch=self.batch, sink=self.sink)
        except Exception as exc:
            if not self.failing:
                log.warning("outbox relay to %s failing, events wait in the outbox: %r", self.sink, exc)
            self.failing = True
            return
        if self.failing and sent:
            log.info("outbox relay to %s recovered", self.sink)
            self.failing = False


def background(settings: OrdersSettings) -> CleanupCtx:
    """Relay to RabbitMQ (and Kafka when configured), expire unpaid orders, refresh outbox gauges."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        broker = Broker.from_settings(settings)
        kafka = (
            KafkaEvents(
                settings.kafka_bootstrap,
                settings.kafka_topic,
                partitions=settings.kafka_topic_partitions,
                timeout_s=settings.amqp_timeout_s,
            )
            if settings.kafka_bootstrap
            else None
        )
        tasks = Supervisor("orders")
        relay = Relay(app, "sent_at", broker.publish, batch=settings.outbox_batch)
        tasks.every(settings.outbox_interval_s, relay.run_once, name="outbox-relay")
        if kafka is not None:
            stream = Relay(app, "streamed_at", kafka.publish, batch=settings.outbox_batch)
            tasks.every(settings.outbox_interval_s, stream.run_once, name="outbox-kafka")

        async def expire() -> None:
            async with asyncio.timeout(JOB_TIMEOUT_S):
                await expire_unpaid(app[DB], older_than_s=settings.order_expiry_s)

        async def housekeeping() -> None:
            async with asyncio.timeout(JOB_TIMEOUT_S):
                await outbox.refresh_gauges(app[DB])
                await outbox.purge_sent(app[DB], older_than_s=settings.outbox_retention_s)

        tasks.every(settings.expiry_interval_s, expire, name="order-expiry")
        tasks.every(HOUSEKEEPING_INTERVAL_S, housekeeping, name="outbox-housekeeping")
        yield
        # Periodic loops never finish on their own: cancel at once. A relay batch cut short rolls back
        # and is published again by the next relay (consumers are idempotent).
        await tasks.close(0)
        await broker.close()
        if kafka is not None:
            await kafka.close()

    return ctx
