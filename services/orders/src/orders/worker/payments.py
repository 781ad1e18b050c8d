"""The payment provider over HTTP: bounded calls, retried with backoff, behind a circuit breaker.

Every charge carries ``Idempotency-Key: order-<id>``, so a redelivered message or a retried call after
a timeout never charges twice: the provider answers a repeated key with the original charge.

A refund names the charge by that same key and carries ``Idempotency-Key: refund-order-<id>``: one
refund per order, whoever asks and however often. The provider serialises it with any request under
the charge's key, then refunds what that charge captured, or, when nothing was captured (yet), voids
the key so that a charge arriving later is declined (what real providers offer as "cancel or refund"
by merchant reference). So a refund asked for while a charge is still in flight never misses it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from asynccore.resilience import CircuitBreaker, retrying
from orders.metrics import PAYMENT_DURATION, PAYMENT_ERRORS
from orders.store import Order

__all__ = ["PaymentDeclined", "PaymentProvider", "PaymentUnavailable", "Refund", "charge_key", "refund_key"]


class PaymentUnavailable(Exception):
    """The provider failed, timed out or was unreachable: worth trying again later."""


class PaymentDeclined(Exception):
    """The provider answered with a 4xx: retrying the same request will not change the answer."""


@dataclass(frozen=True, slots=True)
class Refund:
    """The provider's answer to a refund: ``amount_cents`` 0 means nothing had been captured (voided)."""

    id: str
    amount_cents: int


def charge_key(order_id: int) -> str:
    return f"order-{order_id}"


def refund_key(order_id: int) -> str:
    return f"refund-order-{order_id}"


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
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.breaker = breaker

    async def charge(self, order: Order) -> str:
        """Charge the order's total; the provider's charge id. Raises after the last attempt, or at
        once with :class:`~asynccore.resilience.CircuitOpen` while the breaker is open."""
        body = {"order_id": order.id, "amount_cents": order.total_cents, "currency": "EUR"}
        answer = await self._post("/charges", body, charge_key(order.id))
        return str(answer["id"])

    async def refund(self, order: Order) -> Refund:
        """Refund what was captured for ``order`` (all of it), or void its payment if nothing was."""
        body = {"charge_key": charge_key(order.id), "order_id": order.id}
        answer = await self._post("/refunds", body, refund_key(order.id))
        return Refund(str(answer["id"]), int(answer["amount_cents"]))

    async def _post(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        async for attempt in retrying(
            attempts=self.attempts,
            initial_s=self.backoff_s,
            max_s=self.backoff_s * 8,
            retry_on=PaymentUnavailable,
            name="payment",
        ):
            with attempt:
                async with self.breaker:
                    return await self._post_once(path, body, key)
        raise AssertionError("unreachable: retrying either returns or raises")

    async def _post_once(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            async with (
                asyncio.timeout(self.timeout_s),
                self.session.post(self.base_url + path, json=body, headers={"Idempotency-Key": key}) as resp,
            ):
                if resp.status >= 500:
                    raise PaymentUnavailable(f"provider answered {resp.status}")
                if resp.status >= 400:
                    raise PaymentDeclined(f"provider answered {resp.status}: {await resp.text()}")
                answer = await resp.json()
                if not isinstance(answer, dict) or "id" not in answer:
                    raise ValueError(f"unexpected answer: {answer!r:.200}")
                return answer
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            PAYMENT_ERRORS.inc()
            raise PaymentUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except (PaymentUnavailable, PaymentDeclined):
            PAYMENT_ERRORS.inc()
            raise
        finally:
            PAYMENT_DURATION.observe(time.perf_counter() - started)
