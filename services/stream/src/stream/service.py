"""The stream service: the API on every replica, plus (``STREAM_CONSUME``) a consumer-group member
and an outbox relay as supervised background tasks."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from asynccore.app import TASKS, CleanupCtx, create_app
from asynccore.kafka import ensure_topics
from asynccore.pools.redis import open_redis, redis_pool
from asynccore.revocation import token_revocations
from stream import queries
from stream.api import add_api_routes
from stream.consumer import Consumer
from stream.kafka import kafka_producer
from stream.keys import Keys
from stream.live import LiveFeed, LiveLimits
from stream.metrics import TOP_PRODUCTS
from stream.outbox import OutboxRelay
from stream.resources import CONSUMER, KEYS, LIVE, LIVE_LIMITS, PRODUCER, REDIS
from stream.settings import StreamSettings

__all__ = ["build_app"]

TOP_N = 10
TOP_REFRESH_S = 5.0


def build_app(settings: StreamSettings) -> web.Application:
    keys = Keys(settings.stream_redis_prefix)
    resources = [
        redis_pool(REDIS, settings.redis_url),
        token_revocations(settings),
        _topics(settings),
        kafka_producer(settings.kafka_bootstrap, settings.stream_topic),
    ]
    if settings.stream_consume:
        resources.append(_workers(settings, keys))
    resources.append(_top_products_gauge(keys))
    app = create_app("stream", settings, resources=resources)
    app[KEYS] = keys
    app[LIVE] = LiveFeed(lambda: queries.live_snapshot(app[REDIS], keys))
    app[LIVE_LIMITS] = LiveLimits(settings.stream_live_max, settings.stream_live_max_per_client)
    add_api_routes(app)
    app.on_shutdown.append(_end_streams)
    return app


async def _end_streams(app: web.Application) -> None:
    app[LIVE].closing.set()


def _topics(settings: StreamSettings) -> CleanupCtx:
    """Create the topics this service reads and writes when absent, before anything uses them (the
    broker does not create topics on first use); start-up fails if Kafka does not answer in time."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        topics = {
            settings.stream_topic: settings.stream_partitions,
            settings.stream_dlq_topic: settings.stream_dlq_partitions,
            settings.stream_alerts_topic: settings.stream_alerts_partitions,
        }
        await ensure_topics(
            settings.kafka_bootstrap, topics, timeout_s=settings.stream_topics_timeout_s, client_id="stream"
        )
        yield

    return ctx


def _top_products_gauge(keys: Keys) -> CleanupCtx:
    """Keep ``stream_top_product_events`` on the current top 10, dropping products that fall out."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        shown: set[str] = set()

        async def refresh() -> None:
            now_ms = int(time.time() * 1000)
            top: Any = await queries.top_products(app[REDIS], keys, "views", TOP_N, now_ms)
            counts = {item["product_id"]: item["count"] for item in top["products"]}
            for product in shown - counts.keys():
                TOP_PRODUCTS.remove(product)
            for product, count in counts.items():
                TOP_PRODUCTS.labels(product).set(count)
            shown.clear()
            shown.update(counts)

        app[TASKS].every(TOP_REFRESH_S, refresh, name="stream-top-products")
        yield

    return ctx


def _workers(settings: StreamSettings, keys: Keys) -> CleanupCtx:
    """The consumer and the outbox relay, on a Redis client of their own (flushes are big commands)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        redis = open_redis(settings.redis_url, max_connections=4, timeout_s=settings.stream_flush_timeout_s)
        relay = OutboxRelay(
            redis,
            keys,
            app[PRODUCER],
            bootstrap=settings.kafka_bootstrap,
            name=f"{socket.gethostname()}:{settings.stream_port}",
            dlq_topic=settings.stream_dlq_topic,
            lease_ms=settings.stream_relay_lease_ms,
        )
        consumer = Consumer(settings, redis, on_flushed=lambda totals, fired: relay.wake())
        app[CONSUMER] = consumer
        app[TASKS].spawn(consumer.run(), name="stream-consumer")
        app[TASKS].spawn(relay.run(), name="stream-outbox-relay")

        async def stop(_: web.Application) -> None:
            consumer.stop()
            relay.stop()

        app.on_shutdown.append(stop)
        try:
            yield
        finally:
            consumer.stop()
            relay.stop()
            await redis.aclose()

    return ctx
