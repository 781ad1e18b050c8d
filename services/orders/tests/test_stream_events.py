"""Order events for the stream service, through a real Kafka-protocol broker (librdkafka mock cluster)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomysql
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from asynccore.auth import Caller
from asynccore.testing import ServiceProcess, wait_until
from orders import outbox
from orders.db import transaction
from orders.lifecycle import move
from orders.models import NewOrder, NewProduct, OrderLine
from orders.outbox import Event
from orders.placement import place_order
from orders.products import create_product
from orders.states import Status
from orders.stream_events import KafkaEvents, stream_events

KAFKA_MOCK = Path(__file__).resolve().parents[3] / "deploy" / "local" / "kafka_mock.py"


def test_stream_events_follow_the_stream_schema() -> None:
    payload = {
        "order_id": 7,
        "user_id": "u1",
        "ts": 1_700_000_000_000,
        "items": [
            {"product_id": 3, "quantity": 2, "price_cents": 1250},
            {"product_id": 9, "quantity": 1, "price_cents": 99},
        ],
    }
    placed = stream_events(Event("abc", "order.created", payload))
    assert placed == [
        {
            "event_id": "abc-3",
            "type": "order_placed",
            "user_id": "u1",
            "product_id": 3,
            "price": 25.0,
            "ts": 1_700_000_000_000,
        },
        {
            "event_id": "abc-9",
            "type": "order_placed",
            "user_id": "u1",
            "product_id": 9,
            "price": 0.99,
            "ts": 1_700_000_000_000,
        },
    ]
    assert [e["type"] for e in stream_events(Event("d", "order.paid", payload))] == ["payment", "payment"]
    assert stream_events(Event("e", "order.cancelled", payload)) == []


@pytest.fixture
async def kafka() -> AsyncIterator[tuple[str, str]]:
    """A private mock Kafka cluster with one topic: (bootstrap, topic)."""
    if not KAFKA_MOCK.is_file():
        pytest.skip("deploy/local/kafka_mock.py is not there")
    topic = f"events-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        bootstrap_file = Path(tmp) / "bootstrap"
        broker = ServiceProcess(
            [
                sys.executable,
                str(KAFKA_MOCK),
                "--topic",
                f"{topic}:2",
                "--bootstrap-file",
                str(bootstrap_file),
            ],
            name="kafka-mock",
        )
        await broker.start()
        try:
            await wait_until(bootstrap_file.exists, timeout=20, message="mock Kafka cluster up")
            yield bootstrap_file.read_text().strip(), topic
        finally:
            await broker.stop()


async def _consume(bootstrap: str, topic: str, count: int) -> list[dict[str, object]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(20):
            while len(got) < count:
                batches = await consumer.getmany(timeout_ms=200)
                got += [orjson.loads(record.value) for records in batches.values() for record in records]
    finally:
        await consumer.stop()
    return got


async def test_relay_streams_placed_and_paid_orders(pool: aiomysql.Pool, kafka: tuple[str, str]) -> None:
    bootstrap, topic = kafka
    pid = (await create_product(pool, NewProduct(sku="k", name="k", price_cents=300, stock=10))).id
    placed = await place_order(
        pool, Caller("u9", "u", ""), NewOrder(items=[OrderLine(product_id=pid, quantity=2)]), None
    )
    await move(pool, placed.order.id, Status.PAID, payment_ref="ch_1")
    await move(pool, placed.order.id, Status.FULFILLED)

    producer = KafkaEvents(bootstrap, topic, timeout_s=10)
    try:
        assert await outbox.drain(pool, producer.publish, batch=10, sink="streamed_at") == 3
    finally:
        await producer.close()

    events = await _consume(bootstrap, topic, 2)
    assert sorted((e["type"], e["product_id"], e["price"], e["user_id"]) for e in events) == [
        ("order_placed", pid, 6.0, "u9"),
        ("payment", pid, 6.0, "u9"),
    ]
    async with transaction(pool) as cur:
        await cur.execute("SELECT COUNT(*) FROM outbox WHERE streamed_at IS NULL")
        assert (await cur.fetchone())[0] == 0
