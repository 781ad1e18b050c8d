"""The payment provider over HTTP: bounded calls, retried with backoff, behind a circuit breaker.

Every charge carries ``Idempotency-Key: order-<id>``, so a redelivered message or a retried call after
a timeout never charges twice: the provider answers a repeated key with the original charge.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from asynccore.resilience import CircuitBreaker, retrying
from orders.metrics import PAYMENT_DURATION, PAYMENT_ERRORS
from orders.store import Order

__all__ = ["PaymentDeclined", "PaymentProvider", "PaymentUnavailable"]


class PaymentUnavailable(Exception):
    """The provider failed, timed out or was unreachable: worth trying again later."""


class PaymentDeclined(Exception):
    """The provider answered with a 4xx: retrying the same request will not change the answer."""


class PaymentProvider:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout_s: float,
        attempts: int,
        backoff_s: float,
        breaker: CircuitBreaker,
    ) -> None:
        self.session = session
        self.url = base_url.rstrip("/") + "/charges"
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.breaker = breaker

    async def charge(self, order: Order) -> str:
        """Charge the order's total; the provider's charge id. Raises after the last attempt, or at
        once with :class:`~asynccore.resilience.CircuitOpen` while the breaker is open."""
        async for attempt in retrying(
            attempts=self.attempts,
            initial_s=self.backoff_s,
            max_s=self.backoff_s * 8,
            retry_on=PaymentUnavailable,
            name="payment",
        ):
            with attempt:
                async with self.breaker:
                    return await self._charge_once(order)
        raise AssertionError("unreachable: retrying either returns or raises")

    async def _charge_once(self, order: Order) -> str:
        started = time.perf_counter()
        body = {"order_id": order.id, "amount_cents": order.total_cents, "currency": "EUR"}
        headers = {"Idempotency-Key": f"order-{order.id}"}
        try:
            async with (
                asyncio.timeout(self.timeout_s),
                self.session.post(self.url, json=body, headers=headers) as resp,
            ):
                if resp.status >= 500:
                    raise PaymentUnavailable(f"provider answered {resp.status}")
                if resp.status >= 400:
                    raise PaymentDeclined(f"provider answered {resp.status}: {await resp.text()}")
                charge = await resp.json()
                return str(charge["id"])
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            PAYMENT_ERRORS.inc()
            raise PaymentUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except (PaymentUnavailable, PaymentDeclined):
            PAYMENT_ERRORS.inc()
            raise
        finally:
            PAYMENT_DURATION.observe(time.perf_counter() - started)
