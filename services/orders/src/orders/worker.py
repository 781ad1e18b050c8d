"""The fulfilment worker: consume ``order.created`` → pay → commit → email → ack.

Handlers are idempotent because redelivery is normal (a worker killed mid-payment, a lost ack): the
order's status says what is left to do, the payment provider dedups by ``order-<id>``, and the
message is acked only after the database change committed. A failed attempt parks a copy in the retry
queue (back after ``WORKER_RETRY_DELAY_S``); after ``WORKER_ATTEMPTS`` the order is marked
``payment_failed`` and the message is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import aiomysql
import orjson
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web

from asynccore.app import CleanupCtx, add_readiness_check, create_app, run
from asynccore.errors import ApiError
from asynccore.logs import new_request_id, reset_request_id, set_request_id
from asynccore.pools.http import http_session
from asynccore.resilience import CircuitBreaker, CircuitOpen
from asynccore.settings import load_settings
from asynccore.tasks import Supervisor
from orders import mail
from orders.db import transaction
from orders.lifecycle import move
from orders.messaging import ATTEMPT_HEADER, REQUEST_ID_HEADER, Broker, Unsubscribe
from orders.metrics import DLQ_MESSAGES
from orders.payments import PaymentDeclined, PaymentProvider, PaymentUnavailable
from orders.resources import DB, database
from orders.settings import OrdersSettings
from orders.states import IllegalTransition, Status
from orders.store import Order, load_order

__all__ = ["WORKER", "Fulfilment", "build_app", "main"]

log = logging.getLogger("orders.worker")

HTTP = web.AppKey("orders_worker_http", aiohttp.ClientSession)


class GiveUp(Exception):
    """Retrying cannot help (declined payment, unknown order): dead-letter now."""


class Fulfilment:
    def __init__(
        self, pool: aiomysql.Pool, broker: Broker, provider: PaymentProvider, settings: OrdersSettings
    ) -> None:
        self.pool = pool
        self.broker = broker
        self.provider = provider
        self.settings = settings
        self.handlers = Supervisor("orders-worker")
        self._unsubscribe: Unsubscribe | None = None
        self._connecting: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._connecting = self.handlers.spawn(self.consume(), name="consume")

    async def consume(self) -> None:
        """Connect (retrying while RabbitMQ is away), then consume; aio-pika re-consumes after a loss."""
        while True:
            try:
                self._unsubscribe = await self.broker.consume(self._on_message)
                log.info("consuming %s", self.broker.names.payments)
                return
            except Exception as exc:
                log.warning("cannot consume yet, retrying: %r", exc)
                await asyncio.sleep(self.settings.amqp_reconnect_s)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Prefetch bounds how many of these run at once; each is owned by the handlers supervisor.
        self.handlers.spawn(self.handle(message), name="fulfil-order")

    async def stop(self) -> None:
        """Stop taking messages, let the ones in hand finish (bounded), then disconnect."""
        if self._connecting is not None:
            self._connecting.cancel()
        if self._unsubscribe is not None:
            try:
                async with asyncio.timeout(self.settings.amqp_timeout_s):
                    await self._unsubscribe()
            except Exception as exc:
                log.warning("could not cancel the consumer: %r", exc)
        await self.handlers.close(self.settings.shutdown_timeout_s)
        await self.broker.close()

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Handle one delivery under the request id of the API request that placed the order, so its
        log lines and the payment call carry the same id as the order's HTTP request."""
        rid = (message.headers or {}).get(REQUEST_ID_HEADER)
        token = set_request_id(rid if isinstance(rid, str) else new_request_id())
        try:
            await self._handle(message)
        finally:
            reset_request_id(token)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        attempt = _attempt(message)
        try:
            order_id = int(orjson.loads(message.body)["order_id"])
        except (ValueError, KeyError, TypeError):
            log.error("malformed message dead-lettered", extra={"message_id": message.message_id})
            DLQ_MESSAGES.inc()
            await message.reject(requeue=False)
            return
        try:
            async with asyncio.timeout(self.settings.worker_message_timeout_s):
                await self.fulfil(order_id)
        except GiveUp as exc:
            await self.give_up(message, order_id, str(exc))
        except Exception as exc:
            if attempt >= self.settings.worker_attempts:
                await self.give_up(message, order_id, f"attempt {attempt}: {exc!r}")
                return
            log.warning("order %s attempt %d failed: %r", order_id, attempt, exc)
            delay = self.settings.worker_retry_delay_s
            if isinstance(exc, CircuitOpen):  # the provider is known to be down: wait out its cool-down
                delay = max(delay, self.provider.breaker.reset_after_s)
            await self.retry(message, attempt + 1, delay)
        else:
            await message.ack()

    async def fulfil(self, order_id: int) -> None:
        """Bring the order as far as it can go; each step is skipped when its effect is already there."""
        order = await self._load(order_id)
        if order.status is Status.PENDING:
            try:
                charge_id = await self.provider.charge(order)
            except PaymentDeclined as exc:
                raise GiveUp(str(exc)) from exc
            try:
                order = await move(self.pool, order_id, Status.PAID, payment_ref=charge_id)
            except IllegalTransition:
                order = await self._load(order_id)  # another delivery paid it, or it expired meanwhile
                if order.status is Status.CANCELLED:
                    log.warning("order %s was cancelled while charge %s went through", order_id, charge_id)
        if order.status is Status.PAID and not order.email_sent:
            settings = self.settings
            msg = mail.confirmation(order, sender=settings.mail_from)
            await mail.send(
                msg, host=settings.smtp_host, port=settings.smtp_port, timeout_s=settings.smtp_timeout_s
            )
            async with transaction(self.pool) as cur:
                await cur.execute(
                    "UPDATE orders SET email_sent_at = UTC_TIMESTAMP(6) "
                    "WHERE id = %s AND email_sent_at IS NULL",
                    (order_id,),
                )

    async def _load(self, order_id: int) -> Order:
        async with transaction(self.pool) as cur:
            order = await load_order(cur, order_id)
        if order is None:
            raise GiveUp(f"order {order_id} does not exist")
        return order

    async def retry(self, message: AbstractIncomingMessage, attempt: int, delay_s: float) -> None:
        """Park a copy for later, then ack this one (a crash in between only duplicates the message)."""
        try:
            await self.broker.retry_later(message, attempt=attempt, delay_s=delay_s)
        except Exception as exc:
            log.warning("cannot park a retry, requeueing: %r", exc)
            await message.nack(requeue=True)
            return
        await message.ack()

    async def give_up(self, message: AbstractIncomingMessage, order_id: int, reason: str) -> None:
        """Mark the order payment_failed (if still pending) and dead-letter the message."""
        # Already settled one way or another, or unknown: then there is nothing to mark.
        with contextlib.suppress(IllegalTransition, ApiError):
            await move(self.pool, order_id, Status.PAYMENT_FAILED)
        log.error("order %s dead-lettered: %s", order_id, reason)
        DLQ_MESSAGES.inc()
        await message.reject(requeue=False)


WORKER = web.AppKey("orders_worker", Fulfilment)


def _attempt(message: AbstractIncomingMessage) -> int:
    """Which delivery attempt this is (the first has no header)."""
    value = (message.headers or {}).get(ATTEMPT_HEADER, 1)
    return value if isinstance(value, int) and value > 0 else 1


def fulfilment(settings: OrdersSettings) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        broker = Broker.from_settings(settings, prefetch=settings.worker_prefetch)
        breaker = CircuitBreaker(
            "payment", settings.breaker_failures, settings.breaker_reset_s, failure_on=PaymentUnavailable
        )
        provider = PaymentProvider(
            app[HTTP],
            settings.payment_url,
            timeout_s=settings.payment_timeout_s,
            attempts=settings.payment_retries,
            backoff_s=settings.payment_backoff_s,
            breaker=breaker,
        )
        worker = Fulfilment(app[DB], broker, provider, settings)
        app[WORKER] = worker
        worker.start()

        async def amqp_ready() -> None:
            if not broker.connected:
                raise ConnectionError("not connected to RabbitMQ")

        add_readiness_check(app, "amqp", amqp_ready)
        yield
        await worker.stop()

    return ctx


def build_app(settings: OrdersSettings) -> web.Application:
    return create_app(
        "orders-worker",
        settings,
        resources=[
            *database(settings, maxsize=max(4, settings.worker_prefetch)),
            http_session(HTTP, name="payment", timeout_s=settings.payment_timeout_s * 2),
            fulfilment(settings),
        ],
    )


def main() -> None:
    settings = load_settings(OrdersSettings)
    run(build_app(settings), settings.orders_worker_port)


if __name__ == "__main__":
    main()
