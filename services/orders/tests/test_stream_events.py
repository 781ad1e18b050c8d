"""Order events for the stream service, through a real Apache Kafka broker (devservers.kafka_broker).

The broker does not create topics on first use: the relay creates the one it streams to if absent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import aiomysql
import confluent_kafka
import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer
from confluent_kafka.admin import AdminClient
from conftest import place_order

from asynccore.auth import Caller
from asynccore.testing import TcpProxy, wait_until
from contracts import events as wire
from devservers.kafka_broker import KafkaBroker
from orders import outbox
from orders.app import build_app
from orders.db import transaction
from orders.lifecycle import move
from orders.models import NewOrder, NewProduct, OrderLine
from orders.outbox import Event
from orders.products import create_product
from orders.settings import OrdersSettings
from orders.states import Status
from orders.stream_events import KafkaEvents, stream_events

Headers = dict[str, str]


def emitted(event: Event) -> list[dict[str, object]]:
    """What the relay sends to the topic for ``event``, decoded by the topic's schema (the stream's)."""
    return [msgspec.structs.asdict(wire.decode(wire.encode(e))) for e in stream_events(event)]


def test_stream_events_decode_through_the_topic_schema() -> None:
    payload = {
        "order_id": 7,
        "user_id": "u1",
        "ts": 1_700_000_000_000,
        "items": [
            {"product_id": 3, "quantity": 2, "price_cents": 1250},
            {"product_id": 9, "quantity": 1, "price_cents": 99},
        ],
    }
    placed = emitted(Event("abc", "order.created", payload))
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
    assert [e["type"] for e in emitted(Event("d", "order.paid", payload))] == ["payment", "payment"]
    assert emitted(Event("e", "order.cancelled", payload)) == []


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    """A private Apache Kafka broker for this module's tests, each on a topic of its own."""
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture
def topic(broker: KafkaBroker) -> Iterator[str]:
    """A topic name owned by this test, absent at first; deleted afterwards if someone created it."""
    name = f"events-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        broker.delete_topic(name)
    except confluent_kafka.KafkaException as exc:
        if exc.args[0].code() != confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise


def _partitions(bootstrap: str, topic: str) -> int | None:
    """How many partitions ``topic`` has; None while the broker does not list it."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    found = admin.list_topics(timeout=10).topics.get(topic)
    return None if found is None else len(found.partitions)


async def partitions(bootstrap: str, topic: str) -> int | None:
    return await asyncio.to_thread(_partitions, bootstrap, topic)


async def _consume(bootstrap: str, topic: str, count: int) -> list[dict[str, object]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(20):
            while len(got) < count:
                batches = await consumer.getmany(timeout_ms=200)
                got += [  # each value as the stream service decodes it
                    msgspec.structs.asdict(wire.decode(record.value))
                    for records in batches.values()
                    for record in records
                ]
    finally:
        await consumer.stop()
    return got


async def _unstreamed(pool: aiomysql.Pool) -> int:
    async with transaction(pool) as cur:
        await cur.execute("SELECT COUNT(*) FROM outbox WHERE streamed_at IS NULL")
        return int((await cur.fetchone())[0])


async def test_relay_streams_placed_and_paid_orders(
    pool: aiomysql.Pool, broker: KafkaBroker, topic: str
) -> None:
    broker.create_topic(topic, partitions=2)
    pid = (await create_product(pool, NewProduct(sku="k", name="k", price_cents=300, stock=10))).id
    placed = await place_order(
        pool, Caller("u9", "u", ""), NewOrder(items=[OrderLine(product_id=pid, quantity=2)]), None
    )
    await move(pool, placed.order.id, Status.PAID, payment_ref="ch_1")
    await move(pool, placed.order.id, Status.FULFILLED)

    producer = KafkaEvents(broker.bootstrap, topic, partitions=16, timeout_s=10)
    try:
        assert await outbox.drain(pool, producer.publish, batch=10, sink="streamed_at") == 3
    finally:
        await producer.close()

    events = await _consume(broker.bootstrap, topic, 2)
    assert sorted((e["type"], e["product_id"], e["price"], e["user_id"]) for e in events) == [
        ("order_placed", pid, 6.0, "u9"),
        ("payment", pid, 6.0, "u9"),
    ]
    assert await _unstreamed(pool) == 0
    assert await partitions(broker.bootstrap, topic) == 2  # an existing topic is left as it is


async def test_the_api_starts_while_kafka_is_away_and_then_creates_the_topic_it_streams_to(
    settings: OrdersSettings,
    pool: aiomysql.Pool,
    broker: KafkaBroker,
    topic: str,
    admin: Headers,
    user: Callable[[str], Headers],
) -> None:
    # Kafka is reached through a proxy that is cut at first: orders starts before Kafka answers.
    proxy = TcpProxy("127.0.0.1", broker.port)
    await proxy.start()
    await proxy.cut()
    streaming = settings.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{proxy.port}",
            "kafka_topic": topic,
            "kafka_topic_partitions": 3,
        }
    )
    try:
        async with TestClient(TestServer(build_app(streaming))) as client:
            resp = await client.post(
                "/api/products", json={"sku": "s", "name": "s", "price_cents": 250, "stock": 5}, headers=admin
            )
            assert resp.status == 201, await resp.text()
            product = (await resp.json())["id"]
            resp = await client.post(
                "/api/orders", json={"items": [{"product_id": product, "quantity": 2}]}, headers=user("31")
            )
            assert resp.status == 201, await resp.text()
            await wait_until(lambda: _sent_to_rabbitmq(pool), timeout=10, message="relayed to RabbitMQ")
            assert await _unstreamed(pool) == 1  # waits in the outbox for Kafka
            assert await partitions(broker.bootstrap, topic) is None

            await proxy.restore()
            await wait_until(lambda: _nothing_unstreamed(pool), timeout=30, message="streamed to Kafka")
            assert await partitions(broker.bootstrap, topic) == 3
            (event,) = await _consume(broker.bootstrap, topic, 1)
            assert (event["type"], event["product_id"], event["price"], event["user_id"]) == (
                "order_placed",
                product,
                5.0,
                "31",
            )
    finally:
        await proxy.close()


async def _sent_to_rabbitmq(pool: aiomysql.Pool) -> bool:
    async with transaction(pool) as cur:
        await cur.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
        return int((await cur.fetchone())[0]) == 0


async def _nothing_unstreamed(pool: aiomysql.Pool) -> bool:
    return await _unstreamed(pool) == 0
