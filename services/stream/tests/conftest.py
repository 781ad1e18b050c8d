"""Real infrastructure for the stream tests: one Apache Kafka broker per session (deploy/kafka as a
subprocess, its own data dir and ports, topics created per test) and the shared Redis under a
unique key prefix per test."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from redis.asyncio import Redis
from stream_testkit import REDIS_URL, Topics, serve, settings_for

from devservers.kafka_broker import KafkaBroker

# Secrets have no default in code: the tests bring their own, set at import so that settings built in
# this process and every service process the tests start (which inherit the environment) share them.
os.environ.setdefault("JWT_SECRET", secrets.token_hex(32))
os.environ.setdefault("STREAM_INGEST_TOKEN", secrets.token_urlsafe(32))
os.environ.setdefault("STREAM_ADMIN_TOKEN", secrets.token_urlsafe(32))


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture
def topics(kafka: KafkaBroker) -> Topics:
    """Fresh topics for one test (8 event partitions)."""
    run = uuid.uuid4().hex[:10]
    made = Topics(f"events-{run}", f"dlq-{run}", f"alerts-{run}", 8)
    kafka.create_topic(made.events, made.partitions)
    kafka.create_topic(made.dlq, 2)
    kafka.create_topic(made.alerts, 2)
    return made


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    """A Redis key prefix owned by one test; its keys are deleted afterwards."""
    name = f"test-stream:{uuid.uuid4().hex[:12]}:"
    yield name
    batch = [key async for key in redis.scan_iter(match=f"{name}*", count=1000)]
    for i in range(0, len(batch), 1000):
        await redis.delete(*batch[i : i + 1000])


@pytest.fixture
def stream_env(kafka: KafkaBroker, topics: Topics, prefix: str) -> dict[str, str]:
    """Environment for a stream service process of this test."""
    return {
        "KAFKA_BOOTSTRAP": kafka.bootstrap,
        "REDIS_URL": REDIS_URL,
        "REVOCATION_URL": REDIS_URL,
        "REVOCATION_PREFIX": f"{prefix}auth:",
        "STREAM_TOPIC": topics.events,
        "STREAM_DLQ_TOPIC": topics.dlq,
        "STREAM_ALERTS_TOPIC": topics.alerts,
        "STREAM_PARTITIONS": str(topics.partitions),
        "STREAM_DLQ_PARTITIONS": "2",
        "STREAM_ALERTS_PARTITIONS": "2",
        "STREAM_GROUP_ID": f"group-{uuid.uuid4().hex[:8]}",
        "STREAM_REDIS_PREFIX": prefix,
        "STREAM_SESSION_TIMEOUT_MS": "6000",
        "STREAM_HEARTBEAT_MS": "500",
        "STREAM_RELAY_LEASE_MS": "5000",  # a killed process's relay lease runs out within the test
        "LOG_JSON": "false",
        "SHUTDOWN_TIMEOUT_S": "5",
    }


@pytest.fixture
async def api(kafka: KafkaBroker, topics: Topics, prefix: str) -> AsyncIterator[aiohttp.ClientSession]:
    """The API alone (``STREAM_CONSUME=false``): for what needs no consumer."""
    async with serve(settings_for(kafka, topics, prefix, stream_consume=False)) as session:
        yield session


@pytest.fixture
async def consuming_api(
    kafka: KafkaBroker, topics: Topics, prefix: str
) -> AsyncIterator[aiohttp.ClientSession]:
    async with serve(settings_for(kafka, topics, prefix)) as session:
        yield session
