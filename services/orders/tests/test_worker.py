"""The fulfilment worker in this process against real RabbitMQ, MariaDB, payment sandbox and SMTP sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import aiomysql
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import Sandbox, Sink
from prometheus_client import REGISTRY, generate_latest

from asynccore.auth import Caller
from asynccore.logs import reset_request_id, set_request_id
from asynccore.testing import metric_value, wait_until
from orders import outbox
from orders.db import transaction
from orders.messaging import Broker, Names
from orders.models import NewOrder, NewProduct, OrderLine
from orders.placement import place_order
from orders.products import create_product
from orders.resources import DB
from orders.settings import OrdersSettings
from orders.worker import WORKER, build_app

Place = Callable[[], Awaitable[int]]
REQUEST_ID = "req-placed-the-order"


@pytest.fixture
async def worker(settings: OrdersSettings) -> AsyncIterator[web.Application]:
    app = build_app(settings.model_copy(update={"worker_attempts": 3}))
    async with TestClient(TestServer(app)) as client:

        async def consuming() -> bool:
            return (await client.get("/readyz")).status == 200

        await wait_until(consuming, timeout=10)
        yield app


@pytest.fixture
async def broker(settings: OrdersSettings) -> AsyncIterator[Broker]:
    broker = Broker(settings.amqp_url, Names.with_prefix(settings.amqp_prefix), timeout_s=3, reconnect_s=0.3)
    yield broker
    await broker.close()


@pytest.fixture
def place(worker: web.Application, broker: Broker) -> Place:
    """Place an order and relay its event (what the API process does), returning the order id."""
    pool = worker[DB]

    async def run() -> int:
        async with transaction(pool) as cur:
            await cur.execute("SELECT id FROM products WHERE sku = 'w'")
            row = await cur.fetchone()
        pid = (
            row[0]
            if row
            else (await create_product(pool, NewProduct(sku="w", name="w", price_cents=500, stock=100))).id
        )
        token = set_request_id(REQUEST_ID)  # as if placed by an HTTP request with this id
        try:
            placed = await place_order(
                pool, Caller("u1", "ann", ""), NewOrder(items=[OrderLine(product_id=pid, quantity=1)]), None
            )
        finally:
            reset_request_id(token)
        await outbox.drain(pool, broker.publish, batch=10)
        return placed.order.id

    return run


async def _status(pool: aiomysql.Pool, order_id: int) -> str:
    async with transaction(pool) as cur:
        await cur.execute("SELECT status FROM orders WHERE id = %s", (order_id,))
        return str((await cur.fetchone())[0])


def _metric(name: str) -> float:
    return metric_value(generate_latest(REGISTRY).decode(), name) or 0.0


async def test_order_is_paid_and_confirmed_once(
    worker: web.Application, place: Place, sandbox: Sandbox, smtp_sink: Sink
) -> None:
    order_id = await place()
    pool = worker[DB]
    await wait_until(
        lambda: smtp_sink.mailbox.by_message_id[f"<order-{order_id}@orders.asyncstack.test>"] == 1, timeout=10
    )
    assert await _status(pool, order_id) == "paid"
    charge = sandbox.state.charges[f"order-{order_id}"]
    assert charge["amount_cents"] == 500
    assert charge["request_id"] == REQUEST_ID  # the API request's id followed the order to the provider
    async with transaction(pool) as cur:
        await cur.execute("SELECT routing_key FROM outbox ORDER BY id")
        assert [row[0] for row in await cur.fetchall()] == ["order.created", "order.paid"]


async def test_handling_an_order_again_changes_nothing(
    worker: web.Application, place: Place, sandbox: Sandbox, smtp_sink: Sink
) -> None:
    order_id = await place()
    pool = worker[DB]
    email = f"<order-{order_id}@orders.asyncstack.test>"

    async def confirmed() -> bool:
        async with transaction(pool) as cur:
            await cur.execute("SELECT email_sent_at IS NOT NULL FROM orders WHERE id = %s", (order_id,))
            return bool((await cur.fetchone())[0])

    await wait_until(confirmed, timeout=10)
    # What a redelivery does (the message comes back after a lost ack): every step is already done.
    await worker[WORKER].fulfil(order_id)
    assert await _status(pool, order_id) == "paid"
    assert sandbox.state.requests == 1
    assert smtp_sink.mailbox.by_message_id[email] == 1


async def test_failing_payments_end_in_payment_failed_and_the_dlq(
    worker: web.Application, place: Place, broker: Broker, sandbox: Sandbox
) -> None:
    sandbox.state.failure_rate = 1.0
    before = _metric("orders_dlq_messages_total")
    order_id = await place()
    pool = worker[DB]

    async def failed() -> bool:
        return await _status(pool, order_id) == "payment_failed"

    await wait_until(failed, timeout=15)
    dead = await _dead_letters(broker)
    assert [orjson.loads(m.body)["order_id"] for m in dead] == [order_id]
    assert _metric("orders_dlq_messages_total") == before + 1
    assert sandbox.state.charges == {}


async def test_malformed_message_is_dead_lettered(worker: web.Application, broker: Broker) -> None:
    channel = await broker.channel()
    await channel.default_exchange.publish(aio_pika.Message(b"not json"), routing_key=broker.names.payments)
    await wait_until(lambda: _queue_size(broker, broker.names.dead_letters, 1), timeout=10)


async def _queue_size(broker: Broker, name: str, size: int) -> bool:
    """Messages ready in ``name`` (a plain connection: a robust channel caches passive declarations)."""
    connection = await aio_pika.connect(broker.url, timeout=3)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        assert queue.declaration_result.message_count is not None
        return queue.declaration_result.message_count == size
    finally:
        await connection.close()


async def _dead_letters(broker: Broker) -> list[aio_pika.abc.AbstractIncomingMessage]:
    await wait_until(lambda: _queue_size(broker, broker.names.dead_letters, 1), timeout=10)
    channel = await broker.channel()
    queue = await channel.get_queue(broker.names.dead_letters, ensure=False)
    got = await queue.get(timeout=5)
    await got.ack()
    return [got]
