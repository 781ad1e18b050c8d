"""The app's Kafka producer: idempotent (the broker drops a retried duplicate), acks from all replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from aiokafka import AIOKafkaProducer

from asynccore.app import CleanupCtx, add_readiness_check
from stream.resources import PRODUCER

__all__ = ["kafka_producer", "new_producer"]

START_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 2.0


def new_producer(bootstrap: str, *, client_id: str = "stream") -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        request_timeout_ms=10_000,
    )


def kafka_producer(bootstrap: str, topic: str) -> CleanupCtx:
    """A ``cleanup_ctx`` resource: ``app[PRODUCER]``; ``/readyz`` fails as ``kafka`` without ``topic``."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        producer = new_producer(bootstrap)
        async with asyncio.timeout(START_TIMEOUT_S):
            await producer.start()
        app[PRODUCER] = producer

        async def probe() -> None:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                if not await producer.partitions_for(topic):
                    raise RuntimeError(f"no partitions for topic {topic}")

        add_readiness_check(app, "kafka", probe)
        try:
            yield
        finally:
            async with asyncio.timeout(START_TIMEOUT_S):
                await producer.stop()

    return ctx
