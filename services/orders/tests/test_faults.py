"""Real processes, real failures: the API and worker run as subprocesses against MariaDB and RabbitMQ."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import aiomysql
import pytest
from conftest import Sandbox, Sink, env_of

from asynccore.testing import ServiceProcess, TcpProxy, free_port, wait_until
from orders.db import transaction
from orders.inventory import audit
from orders.settings import OrdersSettings

pytestmark = pytest.mark.slow

SETTLED = {"paid", "payment_failed"}
Headers = dict[str, str]


class Stack:
    """API replicas and workers as processes sharing this test's database and RabbitMQ names."""

    def __init__(
        self,
        settings: OrdersSettings,
        pool: aiomysql.Pool,
        sandbox: Sandbox,
        session: aiohttp.ClientSession,
        user: Callable[[str], Headers],
        admin: Headers,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.sandbox = sandbox
        self.http = session
        self.user = user
        self.admin = admin
        self.apis: list[ServiceProcess] = []
        self.api_urls: list[str] = []
        self.workers: list[ServiceProcess] = []

    def api(self, **overrides: str) -> ServiceProcess:
        """An API replica; ``overrides`` are settings that differ (e.g. ``amqp_url`` through a proxy)."""
        port = free_port()
        env = env_of(self.settings, orders_port=port, **overrides)
        process = ServiceProcess(
            [sys.executable, "-m", "orders"],
            env=env,
            health_url=f"http://127.0.0.1:{port}/readyz",
            name="orders-api",
        )
        self.apis.append(process)
        self.api_urls.append(f"http://127.0.0.1:{port}")
        return process

    def worker(self, **overrides: str) -> ServiceProcess:
        port = free_port()
        env = env_of(self.settings, orders_worker_port=port, **overrides)
        process = ServiceProcess(
            [sys.executable, "-m", "orders.worker"],
            env=env,
            health_url=f"http://127.0.0.1:{port}/readyz",
            name="orders-worker",
        )
        self.workers.append(process)
        return process

    async def product(self, stock: int) -> int:
        body = {"sku": uuid.uuid4().hex[:12], "name": "thing", "price_cents": 1000, "stock": stock}
        async with self.http.post(f"{self.api_urls[0]}/api/products", json=body, headers=self.admin) as resp:
            assert resp.status == 201, await resp.text()
            return int((await resp.json())["id"])

    async def order(
        self, buyer: int, product: int, quantity: int = 1, api: int = 0
    ) -> tuple[int, dict[str, Any]]:
        body = {"items": [{"product_id": product, "quantity": quantity}]}
        url = f"{self.api_urls[api % len(self.api_urls)]}/api/orders"
        async with self.http.post(url, json=body, headers=self.user(str(buyer))) as resp:
            return resp.status, await resp.json()

    async def statuses(self) -> dict[int, str]:
        async with transaction(self.pool) as cur:
            await cur.execute("SELECT id, status FROM orders")
            return {int(row[0]): str(row[1]) for row in await cur.fetchall()}

    async def count(self, sql: str, *args: object) -> int:
        async with transaction(self.pool) as cur:
            await cur.execute(sql, args)
            return int((await cur.fetchone())[0])

    async def unsent(self) -> int:
        return await self.count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")

    async def all_relayed(self) -> bool:
        return await self.unsent() == 0

    async def all_settled(self) -> bool:
        statuses = await self.statuses()
        return bool(statuses) and set(statuses.values()) <= SETTLED

    async def sandbox_config(self, **config: float) -> None:
        async with self.http.put(f"{self.sandbox.url}/_admin/config", json=config) as resp:
            assert resp.status == 200, await resp.text()

    async def close(self) -> None:
        for process in [*self.apis, *self.workers]:
            process.kill()
            await process.stop(timeout=5)


@pytest.fixture
async def stack(
    settings: OrdersSettings,
    pool: aiomysql.Pool,
    sandbox: Sandbox,
    smtp_sink: Sink,
    user: Callable[[str], Headers],
    admin: Headers,
) -> AsyncIterator[Stack]:
    connector = aiohttp.TCPConnector(limit=1000)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        stack = Stack(settings, pool, sandbox, session, user, admin)
        try:
            yield stack
        finally:
            await stack.close()


async def test_flash_sale_across_two_api_replicas(stack: Stack) -> None:
    await asyncio.gather(stack.api().start(), stack.api().start())
    product = await stack.product(stock=100)

    outcomes = Counter(
        status for status, _ in await asyncio.gather(*(stack.order(b, product, api=b) for b in range(1000)))
    )

    assert outcomes == {201: 100, 409: 900}
    (state,) = await audit(stack.pool, [product])
    assert state.stock == 0 and state.held == 100 and state.holds


async def test_worker_killed_mid_payment_is_redelivered_and_pays_once(stack: Stack, smtp_sink: Sink) -> None:
    await stack.sandbox_config(latency_ms=1500)
    worker = stack.worker()
    await asyncio.gather(stack.api().start(), worker.start())
    product = await stack.product(stock=10)
    status, order = await stack.order(1, product)
    assert status == 201

    await wait_until(lambda: stack.sandbox.state.requests >= 1, timeout=10, message="payment in flight")
    worker.kill(signal.SIGKILL)
    await worker.wait()
    await stack.sandbox_config(latency_ms=0)
    await stack.worker().start()

    async def paid() -> bool:
        return (await stack.statuses())[order["id"]] == "paid"

    await wait_until(paid, timeout=20)
    key = f"order-{order['id']}"
    await wait_until(
        lambda: smtp_sink.mailbox.by_message_id[f"<order-{order['id']}@orders.asyncstack.test>"] >= 1
    )
    assert stack.sandbox.state.created == 1 and key in stack.sandbox.state.charges  # charged once
    assert stack.sandbox.state.requests >= 2  # the redelivery asked again and got the same charge
    assert await stack.count("SELECT COUNT(*) FROM outbox WHERE routing_key = 'order.paid'") == 1
    assert smtp_sink.mailbox.by_message_id[f"<order-{order['id']}@orders.asyncstack.test>"] == 1


async def test_orders_succeed_while_rabbitmq_is_cut_and_events_follow(stack: Stack, amqp_url: str) -> None:
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    try:
        await asyncio.gather(stack.api(amqp_url=via_proxy).start(), stack.worker(amqp_url=via_proxy).start())
        product = await stack.product(stock=100)
        assert (await stack.order(0, product))[0] == 201
        await wait_until(stack.all_settled, timeout=10, message="first order paid")
        await wait_until(stack.all_relayed, timeout=10, message="its events relayed")

        await proxy.cut()
        results = await asyncio.gather(*(stack.order(b, product) for b in range(1, 21)))
        assert [status for status, _ in results] == [201] * 20
        assert await stack.unsent() == 20
        assert set((await stack.statuses()).values()) == {"paid", "pending"}

        await proxy.restore()
        await wait_until(stack.all_settled, timeout=20, message="every order paid after RabbitMQ returned")
        assert set((await stack.statuses()).values()) == {"paid"}
        await wait_until(stack.all_relayed, timeout=10, message="order.paid events relayed too")
    finally:
        await proxy.close()


async def test_flaky_provider_every_order_settles(stack: Stack) -> None:
    await stack.sandbox_config(failure_rate=0.5)
    await asyncio.gather(stack.api().start(), stack.worker().start())
    product = await stack.product(stock=1000)
    results = await asyncio.gather(*(stack.order(b, product) for b in range(40)))
    assert all(status == 201 for status, _ in results)

    await wait_until(stack.all_settled, timeout=60, message="every order paid or payment_failed")
    statuses = Counter((await stack.statuses()).values())
    assert sum(statuses.values()) == 40
    # Charged exactly the orders that are paid, each once.
    assert stack.sandbox.state.created == statuses["paid"]
    (state,) = await audit(stack.pool, [product])
    assert state.holds


async def test_sigterm_under_load_then_restart_settles_every_committed_order(stack: Stack) -> None:
    await stack.sandbox_config(latency_ms=50)
    api, worker = stack.api(), stack.worker()
    await asyncio.gather(api.start(), worker.start())
    product = await stack.product(stock=100_000)
    stop = asyncio.Event()
    accepted: list[int] = []

    async def buyer(b: int) -> None:
        while not stop.is_set():
            try:
                status, body = await stack.order(b, product)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.05)  # the API is restarting
                continue
            if status == 201:
                accepted.append(body["id"])

    buyers = [asyncio.create_task(buyer(b)) for b in range(20)]
    try:
        await wait_until(lambda: len(accepted) >= 100, timeout=20, message="load running")
        api.kill(signal.SIGTERM)
        worker.kill(signal.SIGTERM)
        assert await api.wait(timeout=15) == 0, api.output[-3000:]
        assert await worker.wait(timeout=15) == 0, worker.output[-3000:]
        committed = set(await stack.statuses())
        assert set(accepted) <= committed  # every 201 the clients saw is in the database
        await asyncio.gather(api.start(), worker.start())
        count = len(accepted)
        await wait_until(lambda: len(accepted) >= count + 50, timeout=20, message="load resumed")
    finally:
        stop.set()
        await asyncio.gather(*buyers)

    await wait_until(stack.all_settled, timeout=60, message="every committed order settled")
    statuses = await stack.statuses()
    assert committed <= set(statuses) and set(statuses.values()) == {"paid"}


async def test_mariadb_cut_is_a_503_that_writes_nothing_and_service_resumes(stack: Stack) -> None:
    shared = urlsplit(stack.settings.mysql_url)
    proxy = TcpProxy(shared.hostname or "127.0.0.1", shared.port or 3306)
    await proxy.start()
    credentials = shared.netloc.rpartition("@")[0]  # user and password as given, still URL-quoted
    via_proxy = urlunsplit(shared._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}"))
    try:
        await asyncio.gather(
            stack.api(mysql_url=via_proxy).start(), stack.worker(mysql_url=via_proxy).start()
        )
        product = await stack.product(stock=10)
        assert (await stack.order(0, product))[0] == 201
        await wait_until(stack.all_settled, timeout=10, message="first order paid")

        await proxy.cut()
        status, body = await stack.order(1, product)
        assert (status, list(body["errors"])) == (503, ["mysql"]), body
        async with stack.http.get(f"{stack.api_urls[0]}/readyz") as resp:
            assert resp.status == 503 and "mysql" in (await resp.json())["failing"]

        await proxy.restore()
        await wait_until(lambda: _placed(stack, 2, product), timeout=20, message="orders placed again")
        await wait_until(stack.all_settled, timeout=20, message="every order paid after MariaDB returned")
        assert len(await stack.statuses()) == 2  # the refused order left nothing behind
        (state,) = await audit(stack.pool, [product])
        assert state.holds and state.held == 2, state
    finally:
        await proxy.close()


async def test_cancels_racing_charges_with_a_flaky_provider_and_a_killed_worker_keep_money_and_state_agreed(
    stack: Stack, smtp_sink: Sink
) -> None:
    """Issue 16, item 2. Orders are cancelled by their owners at moments spread over the payment (before
    the charge, while it is in flight, after it was paid), others expire while their charge is retried,
    the provider fails half its calls, and the worker is SIGKILLed with charges in flight. In the end
    each order's captured minus refunded money is what it owes (its total if paid, else 0), no charge
    was refunded twice, and every customer who got money back was told."""
    await stack.sandbox_config(latency_ms=300, failure_rate=0.5)
    worker = stack.worker(refund_retry_max_s="0.5")
    await asyncio.gather(stack.api(order_expiry_s="4").start(), worker.start())
    product = await stack.product(stock=100)
    placed = await asyncio.gather(*(stack.order(buyer, product) for buyer in range(30)))
    assert [status for status, _ in placed] == [201] * 30
    ids = {buyer: body["id"] for buyer, (_, body) in enumerate(placed)}
    state = stack.sandbox.state

    async def cancel(buyer: int) -> int:
        await asyncio.sleep(random.uniform(0, 3))
        url = f"{stack.api_urls[0]}/api/orders/{ids[buyer]}/cancel"
        async with stack.http.post(url, headers=stack.user(str(buyer))) as resp:
            return resp.status

    cancels = asyncio.gather(*(cancel(buyer) for buyer in ids if buyer % 3))
    await wait_until(
        lambda: (
            state.requests >= 15 and any(state.in_flight(f"order-{order_id}") for order_id in ids.values())
        ),
        timeout=10,
        message="charges in flight",
    )
    worker.kill(signal.SIGKILL)
    await worker.wait()
    await stack.worker(refund_retry_max_s="0.5").start()
    assert set(await cancels) <= {200, 409}  # 409: it had expired first

    async def owed() -> dict[int, int]:
        """Per order, what it owes minus what the provider kept; all 0 once settled."""
        statuses = await stack.statuses()
        gaps = {}
        for order_id, status in statuses.items():
            charge = state.charges.get(f"order-{order_id}", {"amount_cents": 0, "refunded_cents": 0})
            kept = charge["amount_cents"] - charge.get("refunded_cents", 0)
            owes = 1000 if status in ("paid", "fulfilled") else 0
            gaps[order_id] = owes - kept if status != "pending" else -1
        return gaps

    async def agreed() -> bool:
        return not any((await owed()).values())

    try:
        await wait_until(agreed, timeout=60, message="money and state agree for every order")
    except AssertionError as exc:
        gaps = {order_id: gap for order_id, gap in (await owed()).items() if gap}
        raise AssertionError(f"{exc}; orders whose money disagrees (-1: still pending): {gaps}") from None

    async def refunds_recorded() -> bool:
        """Every refund asked for was answered by the provider and recorded (a void included)."""
        pending = "SELECT COUNT(*) FROM orders WHERE refund_requested_at IS NOT NULL AND refunded_at IS NULL"
        return await stack.count(pending) == 0

    await wait_until(refunds_recorded, timeout=30, message="every refund recorded")
    await asyncio.sleep(1.0)  # nothing lands late: still agreed
    assert not any((await owed()).values()), await owed()

    assert state.double_refunds == 0
    statuses = await stack.statuses()
    assert "cancelled" in statuses.values()
    async with transaction(stack.pool) as cur:
        await cur.execute(
            "SELECT id, refund_requested_at IS NOT NULL, refunded_cents FROM orders ORDER BY id"
        )
        rows = await cur.fetchall()
    for order_id, requested, refunded in rows:
        charge = state.charges.get(f"order-{order_id}", {"refunded_cents": 0})
        if requested:  # recorded as the provider has it
            assert refunded is not None and refunded == charge["refunded_cents"], (order_id, refunded, charge)
        elif statuses[order_id] == "cancelled":  # cancelled before the worker set out to charge it
            assert f"order-{order_id}" not in state.charges, order_id
        else:  # paid, and kept
            assert statuses[order_id] == "paid" and charge["refunded_cents"] == 0, order_id
        if refunded:
            message_id = f"<order-{order_id}-refund@orders.asyncstack.test>"
            await wait_until(lambda m=message_id: smtp_sink.mailbox.by_message_id[m] >= 1, timeout=10)
    (stock,) = await audit(stack.pool, [product])
    assert stock.holds, stock


async def _placed(stack: Stack, buyer: int, product: int) -> bool:
    return (await stack.order(buyer, product))[0] == 201
