"""The stream service: the API on every replica, plus (``STREAM_CONSUME``) a consumer-group member
and an outbox relay as supervised background tasks."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

from aiohttp import web

from asynccore.app import TASKS, CleanupCtx, create_app
from asynccore.pools.redis import open_redis, redis_pool
from stream import queries
from stream.api import KEYS, LIVE, REDIS, add_routes
from stream.consumer import Consumer
from stream.kafka import PRODUCER, kafka_producer
from stream.keys import Keys
from stream.live import LiveFeed
from stream.outbox import OutboxRelay
from stream.settings import StreamSettings

__all__ = ["build_app"]

CONSUMER = web.AppKey("consumer", Consumer)


def build_app(settings: StreamSettings) -> web.Application:
    keys = Keys(settings.stream_redis_prefix)
    resources = [
        redis_pool(REDIS, settings.redis_url),
        kafka_producer(settings.bootstrap(), settings.stream_topic),
    ]
    if settings.stream_consume:
        resources.append(_workers(settings, keys))
    app = create_app("stream", settings, resources=resources)
    app[KEYS] = keys
    app[LIVE] = LiveFeed(lambda: queries.live_snapshot(app[REDIS], keys))
    add_routes(app)
    app.on_shutdown.append(_end_streams)
    return app


async def _end_streams(app: web.Application) -> None:
    app[LIVE].closing.set()


def _workers(settings: StreamSettings, keys: Keys) -> CleanupCtx:
    """The consumer and the outbox relay, on a Redis client of their own (flushes are big commands)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        redis = open_redis(settings.redis_url, max_connections=4, timeout_s=settings.stream_flush_timeout_s)
        relay = OutboxRelay(
            redis,
            keys,
            app[PRODUCER],
            name=f"{socket.gethostname()}:{settings.stream_port}",
            dlq_topic=settings.stream_dlq_topic,
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
