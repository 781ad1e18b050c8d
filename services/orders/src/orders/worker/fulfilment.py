"""The fulfilment worker: consume ``order.created`` → pay → commit → email → ack, and
``order.refund_requested`` → refund (or void) → commit → email → ack.

Handlers are idempotent because redelivery is normal (a worker killed mid-payment, a lost ack): the
order's row says what is left to do, the payment provider dedups charges by ``order-<id>`` and refunds
by ``refund-order-<id>``, and a message is acked only after the database change committed. A failed
attempt parks a copy in its lane's retry queue; after its last attempt the message is dead-lettered
(a payment: the order is marked ``payment_failed``; a refund: counted and logged as money still owed).

Money and order state agree: before each charge the worker raises the order's ``payment_attempts``,
only while the order is pending and under its row lock (:func:`lifecycle.start_payment`). A cancel or an
expiry that comes later queues the refund in its own transaction, and the refund, serialised at the
provider with the charge's key, gives back what was captured or voids the payment: a charge that lands
after the order was cancelled or expired is refunded, once, and one not yet made is declined.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal

import aiomysql
import orjson
from aio_pika.abc import AbstractIncomingMessage

from asynccore.logs import new_request_id, reset_request_id, set_request_id
from asynccore.resilience import CircuitOpen
from asynccore.tasks import Supervisor
from orders.db import transaction
from orders.errors import Contention, NotFound
from orders.lifecycle import OWES_NOTHING, move, record_refund, start_payment
from orders.messaging import (
    ATTEMPT_HEADER,
    REQUEST_ID_HEADER,
    WAITS_HEADER,
    Broker,
    Lane,
    Unsubscribe,
)
from orders.metrics import DLQ_MESSAGES, REFUNDS
from orders.settings import OrdersSettings
from orders.states import IllegalTransition, Status
from orders.store import Order, load_order
from orders.worker import mail
from orders.worker.payments import PaymentDeclined, PaymentProvider

__all__ = ["Fulfilment", "GiveUp"]

log = logging.getLogger("orders.worker")


class GiveUp(Exception):
    """Retrying cannot help (declined payment, unknown order): dead-letter now."""


@dataclass(frozen=True, slots=True)
class _Work:
    """What a lane's messages are handled with, how often they are tried, and what giving up does."""

    name: str
    lane: Lane
    handle: Callable[[int], Awaitable[None]]
    attempts: int
    delay_s: Callable[[int], float]  # the wait after failed attempt n
    on_give_up: Callable[[int], Awaitable[None]]
    # While the provider is known down (breaker open, nothing was tried), wait without using an attempt.
    waits_out_outages: bool = False


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
        names = broker.names
        self.work = {
            names.payments: _Work(
                "payment",
                names.payment_lane,
                self.fulfil,
                settings.worker_attempts,
                lambda _: settings.worker_retry_delay_s,
                self._payment_failed,
            ),
            names.refunds: _Work(
                "refund",
                names.refund_lane,
                self.refund,
                settings.refund_attempts,
                lambda attempt: min(
                    settings.worker_retry_delay_s * 2 ** (attempt - 1), settings.refund_retry_max_s
                ),
                self._refund_failed,
                waits_out_outages=True,  # money owed: never given up just because the provider is down
            ),
        }

    def start(self) -> None:
        self._connecting = self.handlers.spawn(self.consume(), name="consume")

    async def consume(self) -> None:
        """Connect (retrying while RabbitMQ is away), then consume; aio-pika re-consumes after a loss."""
        callbacks = {name: functools.partial(self._on_message, work) for name, work in self.work.items()}
        while True:
            try:
                self._unsubscribe = await self.broker.consume(callbacks)
                log.info("consuming %s", ", ".join(callbacks))
                return
            except Exception as exc:
                log.warning("cannot consume yet, retrying: %r", exc)
                await asyncio.sleep(self.settings.amqp_reconnect_s)

    async def _on_message(self, work: _Work, message: AbstractIncomingMessage) -> None:
        # Prefetch bounds how many of these run at once; each is owned by the handlers supervisor.
        self.handlers.spawn(self.handle(message, work), name=f"{work.name}-order")

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

    async def handle(self, message: AbstractIncomingMessage, work: _Work) -> None:
        """Handle one delivery under the request id of the API request that placed the order, so its
        log lines and the payment call carry the same id as the order's HTTP request."""
        rid = (message.headers or {}).get(REQUEST_ID_HEADER)
        token = set_request_id(rid if isinstance(rid, str) else new_request_id())
        try:
            await self._handle(message, work)
        finally:
            reset_request_id(token)

    async def _handle(self, message: AbstractIncomingMessage, work: _Work) -> None:
        attempt = _attempt(message)
        try:
            order_id = int(orjson.loads(message.body)["order_id"])
        except (ValueError, KeyError, TypeError):
            log.error(
                "malformed %s message dead-lettered", work.name, extra={"message_id": message.message_id}
            )
            DLQ_MESSAGES.inc()
            await message.reject(requeue=False)
            return
        try:
            async with asyncio.timeout(self.settings.worker_message_timeout_s):
                await work.handle(order_id)
        except GiveUp as exc:
            await self.give_up(message, work, order_id, str(exc))
        except Exception as exc:
            if isinstance(exc, CircuitOpen) and work.waits_out_outages:
                # Nothing was tried: come back after the breaker's cool-down, same attempt. A long outage
                # stretches the waits as failed attempts would (capped), so parked messages do not churn.
                waits = _header(message, WAITS_HEADER, 0)
                delay = max(self.provider.breaker.reset_after_s, work.delay_s(attempt + waits))
                log.debug("%s of order %s waits %.1fs for the provider: %r", work.name, order_id, delay, exc)
                await self.retry(message, work.lane, attempt, delay, waits=waits + 1)
                return
            if attempt >= work.attempts:
                await self.give_up(message, work, order_id, f"attempt {attempt}: {exc!r}")
                return
            log.warning("%s of order %s, attempt %d failed: %r", work.name, order_id, attempt, exc)
            delay = work.delay_s(attempt)
            if isinstance(exc, CircuitOpen):  # the provider is known to be down: wait out its cool-down
                delay = max(delay, self.provider.breaker.reset_after_s)
            await self.retry(message, work.lane, attempt + 1, delay)
        else:
            await message.ack()

    async def fulfil(self, order_id: int) -> None:
        """Bring the order as far as it can go; each step is skipped when its effect is already there."""
        order = await self._load(order_id)
        if order.status is Status.PENDING:
            if await start_payment(self.pool, order_id):
                order = await self._pay(order)
            else:
                order = await self._load(order_id)  # cancelled or expired just now: nothing to charge
        if order.status is Status.PAID and not order.email_sent:
            msg = mail.confirmation(order, sender=self.settings.mail_from)
            await self._send(msg, "email_sent_at", order_id)

    async def _pay(self, order: Order) -> Order:
        """Charge, then record the payment; the order as it stands afterwards."""
        try:
            charge_id = await self.provider.charge(order)
        except PaymentDeclined as exc:
            now = await self._load(order.id)
            if now.status in OWES_NOTHING and now.refund_requested:
                # Its refund voided the payment before this charge reached the provider: done.
                log.info("order %s is %s: its payment was voided, not charged", order.id, now.status.value)
                return now
            raise GiveUp(str(exc)) from exc
        try:
            return await move(self.pool, order.id, Status.PAID, payment_ref=charge_id)
        except IllegalTransition:
            now = await self._load(order.id)  # another delivery paid it, or it was cancelled meanwhile
            if now.status in OWES_NOTHING:
                if now.refund_requested:
                    log.info(
                        "order %s became %s while charge %s went through: its refund is queued",
                        order.id,
                        now.status.value,
                        charge_id,
                    )
                else:  # cannot happen: the cancel saw payment_attempts > 0 (start_payment)
                    log.error(
                        "order %s is %s, charge %s captured, no refund queued",
                        order.id,
                        now.status.value,
                        charge_id,
                    )
            return now

    async def refund(self, order_id: int) -> None:
        """Give back what was captured for the order (or void its payment), record it, tell the customer."""
        order = await self._load(order_id)
        if order.refunded_cents is None:
            if order.status not in OWES_NOTHING:
                raise GiveUp(f"order {order_id} is {order.status.value}: it is not to be refunded")
            try:
                refund = await self.provider.refund(order)
            except PaymentDeclined as exc:
                raise GiveUp(str(exc)) from exc
            order, recorded = await record_refund(self.pool, order_id, refund.id, refund.amount_cents)
            if recorded:
                REFUNDS.labels("refunded" if refund.amount_cents else "not_charged").inc()
                log.info("order %s: %d cents refunded (%s)", order_id, refund.amount_cents, refund.id)
        if order.refunded_cents and not order.refund_email_sent:
            msg = mail.refund_notice(order, order.refunded_cents, sender=self.settings.mail_from)
            await self._send(msg, "refund_email_sent_at", order_id)

    async def _send(
        self, msg: EmailMessage, sent_column: Literal["email_sent_at", "refund_email_sent_at"], order_id: int
    ) -> None:
        """Send ``msg``, then note it in ``sent_column`` (a crash in between sends it again, once more)."""
        settings = self.settings
        await mail.send(
            msg, host=settings.smtp_host, port=settings.smtp_port, timeout_s=settings.smtp_timeout_s
        )
        async with transaction(self.pool) as cur:
            await cur.execute(
                f"UPDATE orders SET {sent_column} = UTC_TIMESTAMP(6) "  # noqa: S608 (one of two columns)
                f"WHERE id = %s AND {sent_column} IS NULL",
                (order_id,),
            )

    async def _load(self, order_id: int) -> Order:
        async with transaction(self.pool) as cur:
            order = await load_order(cur, order_id)
        if order is None:
            raise GiveUp(f"order {order_id} does not exist")
        return order

    async def retry(
        self,
        message: AbstractIncomingMessage,
        lane: Lane,
        attempt: int,
        delay_s: float,
        *,
        waits: int | None = None,
    ) -> None:
        """Park a copy for later, then ack this one (a crash in between only duplicates the message)."""
        try:
            await self.broker.retry_later(message, lane=lane, attempt=attempt, delay_s=delay_s, waits=waits)
        except Exception as exc:
            log.warning("cannot park a retry, requeueing: %r", exc)
            await message.nack(requeue=True)
            return
        await message.ack()

    async def give_up(
        self, message: AbstractIncomingMessage, work: _Work, order_id: int, reason: str
    ) -> None:
        """Do what giving up means for the lane, then dead-letter the message."""
        await work.on_give_up(order_id)
        log.error("%s of order %s dead-lettered: %s", work.name, order_id, reason)
        DLQ_MESSAGES.inc()
        await message.reject(requeue=False)

    async def _payment_failed(self, order_id: int) -> None:
        """Mark the order payment_failed (if still pending): that queues the void of its payment."""
        # Already settled one way or another, or unknown: then there is nothing to mark (and under
        # lasting contention the expiry task cancels it later, which voids the payment too).
        with contextlib.suppress(IllegalTransition, NotFound, Contention):
            await move(self.pool, order_id, Status.PAYMENT_FAILED)

    async def _refund_failed(self, order_id: int) -> None:
        REFUNDS.labels("dead_lettered").inc()


def _attempt(message: AbstractIncomingMessage) -> int:
    """Which delivery attempt this is (the first has no header)."""
    return max(_header(message, ATTEMPT_HEADER, 1), 1)


def _header(message: AbstractIncomingMessage, name: str, default: int) -> int:
    """A count the worker keeps in a header (``default`` when absent or not a count)."""
    value = (message.headers or {}).get(name, default)
    return value if isinstance(value, int) and value >= 0 else default
