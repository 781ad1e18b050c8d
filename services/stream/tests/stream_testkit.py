"""What the stream tests share: producing and reading topics, settings for a test's topics and
prefix, waiting for the consumer to reach the end."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import confluent_kafka
from aiohttp import web
from confluent_kafka.admin import AdminClient
from redis.asyncio import Redis

from asynccore.auth import issue_token
from asynccore.testing import free_port, server_url
from devservers.kafka_broker import KafkaBroker
from stream.keys import Keys
from stream.service import build_app
from stream.settings import StreamSettings

REDIS_URL = server_url("REDIS") + "/0"


@dataclass
class Topics:
    events: str
    dlq: str
    alerts: str
    partitions: int


def producer(bootstrap: str) -> confluent_kafka.Producer:
    return confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, "log_level": 4}
    )


def topic_size(bootstrap: str, topic: str, partitions: int) -> int:
    """How many records ``topic`` holds (the sum of its partitions' high watermarks; blocking)."""
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"sizer-{uuid.uuid4().hex[:8]}", "log_level": 4}
    )
    try:
        marks = [
            consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=10)
            for p in range(partitions)
        ]
        return sum(high for _, high in marks)
    finally:
        consumer.close()


def delete_records(bootstrap: str, topic: str, before: dict[int, int]) -> None:
    """Delete the records of ``topic`` below ``before[partition]``, as retention would: each
    partition's log start moves up to that offset (blocking)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    marks = [confluent_kafka.TopicPartition(topic, p, offset) for p, offset in before.items()]
    for done in admin.delete_records(marks, operation_timeout=30).values():
        done.result(30)


def ingest_auth() -> dict[str, str]:
    """Headers of a trusted producer: the service token (the tests' own, set in conftest)."""
    return {"Authorization": f"Bearer {os.environ['STREAM_INGEST_TOKEN']}"}


def admin_auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['STREAM_ADMIN_TOKEN']}"}


def member_auth(user_id: str, *, scheme: str = "Token", ttl_s: int = 600, version: int = 0) -> dict[str, str]:
    """Headers of a signed-in user: a JWT as the blog issues them, signed with the tests' secret."""
    token = issue_token(os.environ["JWT_SECRET"], user_id, f"name-{user_id}", ttl_s, version=version)
    return {"Authorization": f"{scheme} {token}"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def produce_partitions(
    bootstrap: str, topic: str, parts: dict[int, list[bytes]], *, per_second: float = 0
) -> None:
    """Produce each partition's values in order, to that partition (blocking).

    With ``per_second``, round-robin over the partitions at that pace: a stream still flowing while
    the test kills consumers.
    """
    out = producer(bootstrap)
    order = [(p, v) for p, values in parts.items() for v in values]
    if per_second:
        cursors = {p: iter(values) for p, values in parts.items()}
        order = []
        while cursors:
            for p in list(cursors):
                value = next(cursors[p], None)
                if value is None:
                    del cursors[p]
                else:
                    order.append((p, value))
    started = time.monotonic()
    for i, (partition, value) in enumerate(order):
        while True:
            try:
                out.produce(topic, value, key=f"k{partition}".encode(), partition=partition)
                break
            except BufferError:
                out.poll(0.05)
        if per_second and i % 100 == 0:
            out.poll(0)
            ahead = i / per_second - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    assert out.flush(30) == 0, "not every event was acknowledged"


def settings_for(kafka: KafkaBroker, topics: Topics, prefix: str, **overrides: object) -> StreamSettings:
    values: dict[str, object] = {
        "kafka_bootstrap": kafka.bootstrap,
        "stream_topic": topics.events,
        "stream_dlq_topic": topics.dlq,
        "stream_alerts_topic": topics.alerts,
        "stream_redis_prefix": prefix,
        "revocation_url": REDIS_URL,
        "revocation_prefix": f"{prefix}auth:",  # under the test's prefix: deleted with it
        "stream_group_id": f"group-{prefix}",
        "stream_session_timeout_ms": 6000,
        "stream_heartbeat_ms": 500,
    }
    values.update(overrides)
    # Why the ignore below: pydantic-settings takes the fields as keyword values of mixed types.
    return StreamSettings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def serve(settings: StreamSettings, port: int | None = None) -> AsyncIterator[aiohttp.ClientSession]:
    """The app in this process on a loopback port (``port``, else a free one); a session bound to it."""
    runner = web.AppRunner(build_app(settings))
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", timeout=timeout) as session:
            yield session
    finally:
        await runner.cleanup()


async def consumed(redis: Redis, prefix: str, topic: str, counts: dict[int, int]) -> bool:
    """Whether the stored offset of every partition has reached its end."""
    keys = Keys(prefix)
    stored = await redis.mget([keys.checkpoint(topic, p) for p in counts])
    return all(
        v is not None and int(v.split(b":")[0]) >= counts[p] for p, v in zip(counts, stored, strict=True)
    )


async def stored_offsets(redis: Redis, prefix: str, topic: str, partitions: int) -> dict[int, int | None]:
    """The stored offset (the next one to process) of each partition; ``None`` if never processed."""
    keys = Keys(prefix)
    stored = await redis.mget([keys.checkpoint(topic, p) for p in range(partitions)])
    return {p: int(v.split(b":")[0]) if v else None for p, v in enumerate(stored)}


async def stored_total(redis: Redis, prefix: str, topic: str, partitions: int) -> int:
    return sum(v or 0 for v in (await stored_offsets(redis, prefix, topic, partitions)).values())


async def outbox_empty(redis: Redis, prefix: str) -> bool:
    """Whether every dead letter and alert of the outbox has been relayed (and deleted)."""
    return await redis.xlen(Keys(prefix).outbox) == 0
