"""The outbox: written with the order or not at all, relayed to RabbitMQ with confirms, never lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import aio_pika
import aiomysql
import orjson
import pytest
from conftest import place_order

from asynccore.auth import Caller
from orders import outbox
from orders.db import transaction
from orders.errors import OutOfStock
from orders.messaging import Broker, Names
from orders.models import NewOrder, NewProduct, OrderLine
from orders.outbox import Event
from orders.products import create_product


@pytest.fixture
async def broker(amqp_url: str, amqp_prefix: str) -> AsyncIterator[Broker]:
    broker = Broker(amqp_url, Names.with_prefix(amqp_prefix), timeout_s=3, reconnect_s=0.3)
    yield broker
    await broker.close()


@pytest.fixture
async def tap(broker: Broker) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """An exclusive queue bound to every routing key of the orders exchange."""
    channel = await broker.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(broker.names.exchange, "#")
    yield queue


async def _unsent(pool: aiomysql.Pool) -> int:
    async with transaction(pool) as cur:
        await cur.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
        return int((await cur.fetchone())[0])


async def _received(
    queue: aio_pika.abc.AbstractQueue, count: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    got = []
    async with asyncio.timeout(5):
        while len(got) < count:
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.02)
                continue
            await message.ack()
            got.append(message)
    return got


async def _orders(pool: aiomysql.Pool, count: int) -> int:
    pid = (await create_product(pool, NewProduct(sku="s", name="s", price_cents=100, stock=count))).id
    for buyer in range(count):
        await place_order(
            pool, Caller(str(buyer), "b", ""), NewOrder(items=[OrderLine(product_id=pid, quantity=1)]), None
        )
    return pid


async def test_a_rolled_back_order_leaves_no_event(pool: aiomysql.Pool) -> None:
    pid = await _orders(pool, 1)  # sold out after this one
    with pytest.raises(OutOfStock):
        await place_order(
            pool, Caller("x", "x", ""), NewOrder(items=[OrderLine(product_id=pid, quantity=1)]), None
        )
    async with transaction(pool) as cur:
        await cur.execute("SELECT COUNT(*) FROM outbox")
        assert (await cur.fetchone())[0] == 1


async def test_relay_publishes_persistent_messages_and_marks_them_sent(
    pool: aiomysql.Pool, broker: Broker, tap: aio_pika.abc.AbstractQueue
) -> None:
    await _orders(pool, 5)
    assert await outbox.drain(pool, broker.publish, batch=2) == 5
    assert await _unsent(pool) == 0
    messages = await _received(tap, 5)
    assert {m.routing_key for m in messages} == {"order.created"}
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in messages)
    assert len({m.message_id for m in messages}) == 5
    assert sorted(orjson.loads(m.body)["order_id"] for m in messages) == [1, 2, 3, 4, 5]


async def test_failed_publish_keeps_rows_for_the_next_run(pool: aiomysql.Pool, broker: Broker) -> None:
    await _orders(pool, 3)

    async def broken(events: Sequence[Event]) -> None:
        raise ConnectionError("broker away")

    with pytest.raises(ConnectionError):
        await outbox.drain(pool, broken, batch=10)
    assert await _unsent(pool) == 3
    assert await outbox.drain(pool, broker.publish, batch=10) == 3
    assert await _unsent(pool) == 0


async def test_concurrent_relays_publish_each_row_once(pool: aiomysql.Pool) -> None:
    await _orders(pool, 60)
    seen: list[str] = []

    async def slow(events: Sequence[Event]) -> None:
        await asyncio.sleep(0.01)
        seen.extend(event.event_id for event in events)

    counts = await asyncio.gather(*(outbox.drain(pool, slow, batch=5) for _ in range(4)))
    assert sum(counts) == 60
    assert len(seen) == len(set(seen)) == 60


async def test_gauges_and_purge(pool: aiomysql.Pool, broker: Broker) -> None:
    await _orders(pool, 2)
    await outbox.refresh_gauges(pool)
    assert outbox.OUTBOX_BACKLOG._value.get() == 2
    await outbox.drain(pool, broker.publish, batch=10)
    assert await outbox.purge_sent(pool, older_than_s=3600) == 0
    assert await outbox.purge_sent(pool, older_than_s=0) == 2
