"""The fulfilment worker in this process against real RabbitMQ, MariaDB, payment sandbox and SMTP sink."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import aiomysql
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import Sandbox, Sink, place_order
from prometheus_client import REGISTRY, generate_latest

from asynccore.auth import Caller
from asynccore.logs import reset_request_id, set_request_id
from asynccore.testing import metric_value, wait_until
from orders import outbox
from orders.db import transaction
from orders.inventory import audit
from orders.lifecycle import expire_unpaid, move
from orders.messaging import Broker, Names
from orders.models import NewOrder, NewProduct, OrderLine
from orders.products import create_product
from orders.resources import DB
from orders.settings import OrdersSettings
from orders.states import Status
from orders.store import load_order
from orders.worker import WORKER, build_app
from orders.worker.payments import PaymentDeclined

Place = Callable[[], Awaitable[int]]
REQUEST_ID = "req-placed-the-order"


@contextlib.asynccontextmanager
async def running_worker(settings: OrdersSettings, **update: object) -> AsyncIterator[web.Application]:
    """A worker app in this process, consuming; ``update`` changes its settings."""
    app = build_app(settings.model_copy(update={"worker_attempts": 3, **update}))
    async with TestClient(TestServer(app)) as client:

        async def consuming() -> bool:
            return (await client.get("/readyz")).status == 200

        await wait_until(consuming, timeout=10)
        yield app


@pytest.fixture
async def worker(settings: OrdersSettings) -> AsyncIterator[web.Application]:
    async with running_worker(settings) as app:
        yield app


@pytest.fixture
async def broker(settings: OrdersSettings) -> AsyncIterator[Broker]:
    broker = Broker(settings.amqp_url, Names.with_prefix(settings.amqp_prefix), timeout_s=3, reconnect_s=0.3)
    yield broker
    await broker.close()


@pytest.fixture
def place(pool: aiomysql.Pool, broker: Broker) -> Place:
    """Place an order and relay its event (what the API process does), returning the order id."""

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


def _metric(metric: str, **labels: str) -> float:
    return metric_value(generate_latest(REGISTRY).decode(), metric, **labels) or 0.0


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


# Money and order state agree (issue 16, item 2): what the provider captured minus what it refunded is
# what the order owes (its total when paid, else 0), and no charge is refunded twice.


def _money(sandbox: Sandbox, order_id: int) -> tuple[int, int]:
    """``(captured, refunded)`` cents at the provider for the order."""
    charge = sandbox.state.charges.get(f"order-{order_id}")
    return (0, 0) if charge is None else (charge["amount_cents"], charge.get("refunded_cents", 0))


def _mails(sink: Sink, order_id: int, kind: str = "") -> int:
    return sink.mailbox.by_message_id[f"<order-{order_id}{kind}@orders.asyncstack.test>"]


async def _routing_keys(pool: aiomysql.Pool) -> list[str]:
    async with transaction(pool) as cur:
        await cur.execute("SELECT routing_key FROM outbox ORDER BY id")
        return [row[0] for row in await cur.fetchall()]


async def _refund_json(pool: aiomysql.Pool, order_id: int) -> object:
    async with transaction(pool) as cur:
        order = await load_order(cur, order_id)
    assert order is not None
    return order.to_json()["refund"]


@pytest.mark.parametrize("how", ["cancelled by its owner", "expired"])
async def test_an_order_cancelled_while_its_charge_is_in_flight_is_refunded_once(
    worker: web.Application,
    place: Place,
    pool: aiomysql.Pool,
    broker: Broker,
    sandbox: Sandbox,
    smtp_sink: Sink,
    how: str,
) -> None:
    sandbox.state.latency_ms = 600
    order_id = await place()
    await wait_until(lambda: sandbox.state.requests >= 1, timeout=10, message="charge in flight")
    if how == "expired":
        assert await expire_unpaid(pool, older_than_s=0) == 1
    else:
        await move(pool, order_id, Status.CANCELLED, owner="u1")
    await outbox.drain(pool, broker.publish, batch=10)  # what the API's relay does

    await wait_until(lambda: _money(sandbox, order_id) == (500, 500), timeout=15, message="charge refunded")
    await wait_until(lambda: _mails(smtp_sink, order_id, "-refund") == 1, timeout=10, message="customer told")
    assert await _status(pool, order_id) == "cancelled"
    assert await _refund_json(pool, order_id) == {"status": "refunded", "amount_cents": 500}
    keys = await _routing_keys(pool)
    assert keys.count("order.refund_requested") == 1 and keys.count("order.refunded") == 1
    assert "order.paid" not in keys and _mails(smtp_sink, order_id) == 0  # never confirmed as paid
    (state,) = await audit(pool, [(await _product_id(pool))])
    assert state.held == 0 and state.holds

    # Both messages delivered again (a lost ack): nothing more happens.
    await worker[WORKER].fulfil(order_id)
    await worker[WORKER].refund(order_id)
    assert sandbox.state.created == 1 and sandbox.state.refunded == 1 and sandbox.state.double_refunds == 0
    assert _mails(smtp_sink, order_id, "-refund") == 1


async def test_a_refund_that_reaches_the_provider_first_voids_the_charge(
    settings: OrdersSettings,
    place: Place,
    pool: aiomysql.Pool,
    broker: Broker,
    sandbox: Sandbox,
    smtp_sink: Sink,
) -> None:
    """The charge's first try fails; while the worker backs off, the order is cancelled and its refund
    voids the payment; the retried charge is declined, and the worker leaves the order as it is."""
    dead_before = _metric("orders_dlq_messages_total")
    async with running_worker(settings, payment_backoff_s=1.0) as worker:
        sandbox.state.failure_rate = 1.0
        order_id = await place()
        await wait_until(lambda: sandbox.state.failures >= 1, timeout=10, message="first try failed")
        sandbox.state.failure_rate = 0.0
        await move(pool, order_id, Status.CANCELLED, owner="u1")
        await outbox.drain(pool, broker.publish, batch=10)
        await wait_until(lambda: sandbox.state.voids == 1, timeout=10, message="payment voided")
        await wait_until(lambda: sandbox.state.requests >= 3, timeout=10, message="charge retried")
        await asyncio.sleep(0.3)  # the worker settles the declined charge
        assert _money(sandbox, order_id) == (0, 0) and sandbox.state.created == 0
        assert await _status(pool, order_id) == "cancelled"
        assert await _refund_json(pool, order_id) == {"status": "not_charged", "amount_cents": 0}
        assert _metric("orders_dlq_messages_total") == dead_before  # declined as expected: not a failure
        assert _mails(smtp_sink, order_id, "-refund") == 0 and _mails(smtp_sink, order_id) == 0
        # The provider refuses any later charge for it.
        async with transaction(pool) as cur:
            order = await load_order(cur, order_id)
        assert order is not None
        with pytest.raises(PaymentDeclined):
            await worker[WORKER].provider.charge(order)


async def test_a_paid_order_cancelled_later_is_refunded_despite_provider_errors(
    worker: web.Application,
    place: Place,
    pool: aiomysql.Pool,
    broker: Broker,
    sandbox: Sandbox,
    smtp_sink: Sink,
) -> None:
    order_id = await place()
    await wait_until(lambda: _mails(smtp_sink, order_id) == 1, timeout=10, message="paid and confirmed")
    refunded_before = _metric("orders_refunds_total", outcome="refunded")
    sandbox.state.failure_rate = 1.0
    await move(pool, order_id, Status.CANCELLED, owner="u1")
    await outbox.drain(pool, broker.publish, batch=10)
    await wait_until(lambda: sandbox.state.failures >= 4, timeout=10, message="refund tried and retried")
    assert _money(sandbox, order_id) == (500, 0)
    assert await _refund_json(pool, order_id) == {"status": "requested"}
    sandbox.state.failure_rate = 0.0

    await wait_until(lambda: _money(sandbox, order_id) == (500, 500), timeout=20, message="refunded")
    await wait_until(lambda: _mails(smtp_sink, order_id, "-refund") == 1, timeout=10, message="customer told")
    assert sandbox.state.refunded == 1 and sandbox.state.double_refunds == 0
    await wait_until(
        lambda: _metric("orders_refunds_total", outcome="refunded") == refunded_before + 1, timeout=5
    )


async def test_a_refund_that_keeps_failing_is_dead_lettered_and_counted(
    settings: OrdersSettings,
    place: Place,
    pool: aiomysql.Pool,
    broker: Broker,
    sandbox: Sandbox,
    smtp_sink: Sink,
) -> None:
    # A breaker that stays closed: while it is open, a refund waits for the provider without using
    # its attempts (it must not be given up because the provider is known down).
    async with running_worker(settings, refund_attempts=2, breaker_failures=1000):
        order_id = await place()
        await wait_until(lambda: _mails(smtp_sink, order_id) == 1, timeout=10, message="paid and confirmed")
        dead_before = _metric("orders_refunds_total", outcome="dead_lettered")
        sandbox.state.failure_rate = 1.0
        await move(pool, order_id, Status.CANCELLED, owner="u1")
        await outbox.drain(pool, broker.publish, batch=10)
        await wait_until(
            lambda: _queue_size(broker, broker.names.refunds_dead_letters, 1),
            timeout=15,
            message="dead-lettered",
        )
        assert _metric("orders_refunds_total", outcome="dead_lettered") == dead_before + 1
        assert await _refund_json(pool, order_id) == {"status": "requested"}  # still owed: ops act on it
        assert _money(sandbox, order_id) == (500, 0)


async def test_a_refund_waits_out_a_provider_outage_without_using_its_attempts(
    settings: OrdersSettings,
    place: Place,
    pool: aiomysql.Pool,
    broker: Broker,
    sandbox: Sandbox,
    smtp_sink: Sink,
) -> None:
    """While the breaker is open nothing is tried: the refund waits for the provider, it is not given up."""
    async with running_worker(settings, refund_attempts=2, refund_retry_max_s=0.5):
        order_id = await place()
        await wait_until(lambda: _mails(smtp_sink, order_id) == 1, timeout=10, message="paid and confirmed")
        sandbox.state.failure_rate = 1.0
        await move(pool, order_id, Status.CANCELLED, owner="u1")
        await outbox.drain(pool, broker.publish, batch=10)
        await wait_until(  # BREAKER_FAILURES (5) failures in a row: the breaker is open
            lambda: sandbox.state.failures >= 5, timeout=10, message="breaker open"
        )
        await asyncio.sleep(2.0)  # a few cool-downs: far more time than two attempts take
        assert await _queue_size(broker, broker.names.refunds_dead_letters, 0)
        assert await _refund_json(pool, order_id) == {"status": "requested"}
        sandbox.state.failure_rate = 0.0
        await wait_until(lambda: _money(sandbox, order_id) == (500, 500), timeout=15, message="refunded")


async def _product_id(pool: aiomysql.Pool) -> int:
    async with transaction(pool) as cur:
        await cur.execute("SELECT id FROM products WHERE sku = 'w'")
        return int((await cur.fetchone())[0])
