"""The worker process: its resources (pool, payment HTTP session, :class:`Fulfilment`) and its main.

A deployable of its own (``orders-worker``), it serves only health, readiness and metrics over HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from asynccore.app import CleanupCtx, add_readiness_check, create_app, run
from asynccore.pools.http import http_session
from asynccore.resilience import CircuitBreaker
from asynccore.settings import load_settings
from orders.messaging import Broker
from orders.resources import DB, database
from orders.settings import OrdersSettings
from orders.worker.fulfilment import Fulfilment
from orders.worker.payments import PaymentProvider, PaymentUnavailable

__all__ = ["HTTP", "WORKER", "build_app", "main"]

HTTP = web.AppKey("orders_worker_http", aiohttp.ClientSession)
WORKER = web.AppKey("orders_worker", Fulfilment)


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
