"""A payment-provider sandbox: a real HTTP server with settable latency and failure rate.

``POST /charges`` with an ``Idempotency-Key`` header creates a charge (201) or returns the one that key
created (200), like real providers do.

``POST /refunds`` (``{"charge_key": <the charge's Idempotency-Key>}``, with an ``Idempotency-Key`` of its
own) is "cancel or refund" by merchant reference: it waits for any request under the charge's key, then
refunds that charge in full (``status`` ``refunded``), or, when no charge exists, voids the key
(``voided``, ``amount_cents`` 0): a charge under it is declined from then on (409). A charge is refunded
at most once: a second refund under another key is refused (409, counted in ``double_refunds``); the
same refund key answers with the first refund (200).

Latency and failure rate (both endpoints; a failure happens before any effect) come from the
environment (``PAYMENT_LATENCY_MS``, ``PAYMENT_FAILURE_RATE``) and can be changed at run time with
``PUT /_admin/config``; ``GET /_admin/stats`` counts requests, failures, charges and refunds so tests
can check that nothing was charged or refunded twice; ``GET /charges/{key}`` shows a charge with the
``refunded_cents`` it has had back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from asynccore.app import add_routes, create_app, run
from asynccore.errors import ApiError
from asynccore.logs import REQUEST_ID_HEADER
from asynccore.settings import ServiceSettings, load_settings
from asynccore.web import read_json

__all__ = ["Sandbox", "SandboxSettings", "build_app", "main"]

MAX_KEPT_CHARGES = 100_000


class SandboxSettings(ServiceSettings):
    payment_sandbox_port: int = Field(default=8090, gt=0, lt=65536)
    payment_latency_ms: float = Field(default=0.0, ge=0)
    payment_failure_rate: float = Field(default=0.0, ge=0, le=1)


class StrictModel(BaseModel):
    """Strict types (no "5" for 5), frozen: what a provider's API takes."""

    model_config = ConfigDict(strict=True, frozen=True)


class Config(StrictModel):
    latency_ms: Annotated[float | int, Field(ge=0, le=60_000)] | None = None
    failure_rate: Annotated[float | int, Field(ge=0, le=1)] | None = None


class ChargeRequest(StrictModel):
    order_id: Annotated[int, Field(gt=0)]
    amount_cents: Annotated[int, Field(ge=0)]
    currency: Annotated[str, Field(min_length=3, max_length=3)] = "EUR"


class RefundRequest(StrictModel):
    charge_key: Annotated[str, Field(min_length=1, max_length=200)]
    order_id: Annotated[int, Field(gt=0)] | None = None


class Sandbox:
    def __init__(self, latency_ms: float, failure_rate: float) -> None:
        self.latency_ms = latency_ms
        self.failure_rate = failure_rate
        self.requests = 0
        self.failures = 0
        self.replays = 0
        self.created = 0
        self.charges: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.refunds: OrderedDict[str, dict[str, Any]] = OrderedDict()  # by the refund's own key
        self.voided: OrderedDict[str, str] = OrderedDict()  # charge key → the refund that voided it
        self.refunded = 0  # refunds that gave money back
        self.voids = 0
        self.refund_replays = 0
        self.double_refunds = 0  # refunds refused because the charge was refunded already
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: Counter[str] = Counter()  # requests holding or awaiting each key's lock

    def stats(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "failure_rate": self.failure_rate,
            "requests": self.requests,
            "failures": self.failures,
            "replays": self.replays,
            "created": self.created,
            "charges": len(self.charges),
            "refunded": self.refunded,
            "voids": self.voids,
            "refund_replays": self.refund_replays,
            "double_refunds": self.double_refunds,
        }

    def in_flight(self, charge_key: str) -> bool:
        """Whether a request under ``charge_key`` (a charge or its refund) is being handled."""
        return self._users[charge_key] > 0

    @contextlib.asynccontextmanager
    async def _serialised(self, key: str) -> AsyncIterator[None]:
        """Requests under one charge key one at a time, as a real provider handles them; then the
        simulated latency and failure (before any effect)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                if self.latency_ms:
                    await asyncio.sleep(self.latency_ms / 1000)
                if random.random() < self.failure_rate:  # a simulated outage, not security
                    self.failures += 1
                    raise ApiError(503, "provider", "sandbox failure (simulated)")
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    async def charge(
        self, key: str, request: ChargeRequest, request_id: str | None
    ) -> tuple[int, dict[str, Any]]:
        """``(201, new charge)``, ``(200, the charge this key made)``, or ApiError 503 (simulated) or
        409 (the key was voided by a refund).

        Requests with one key are handled one at a time, as a real provider does: a retry that arrives
        while the first attempt is still being processed waits for it and then gets its charge.
        """
        async with self._serialised(key):
            existing = self.charges.get(key)
            if existing is not None:
                self.replays += 1
                return 200, existing
            if key in self.voided:
                raise ApiError(409, "Idempotency-Key", "this payment was cancelled: it cannot be charged")
            created = {
                "id": f"ch_{uuid.uuid4().hex}",
                "status": "captured",
                "request_id": request_id,  # which caller's request made it (X-Request-ID)
                "refunded_cents": 0,
                **request.model_dump(),
            }
            self.charges[key] = created
            self.created += 1
            _bound(self.charges)
            return 201, created

    async def refund(self, key: str, request: RefundRequest) -> tuple[int, dict[str, Any]]:
        """``(201, refund or void)``, ``(200, the one this key made)``, or ApiError 503 (simulated) or
        409 (the charge was refunded under another key)."""
        async with self._serialised(request.charge_key):
            existing = self.refunds.get(key)
            if existing is not None:
                self.refund_replays += 1
                return 200, existing
            charge = self.charges.get(request.charge_key)
            refund: dict[str, Any] = {"id": f"re_{uuid.uuid4().hex}", "charge_key": request.charge_key}
            if charge is None:
                self.voided[request.charge_key] = refund["id"]
                _bound(self.voided)
                refund |= {"status": "voided", "charge_id": None, "amount_cents": 0}
                self.voids += 1
            elif charge["refunded_cents"]:
                self.double_refunds += 1
                raise ApiError(409, "charge_key", "this charge was refunded already")
            else:
                charge["refunded_cents"] = charge["amount_cents"]
                charge["status"] = "refunded"
                refund |= {
                    "status": "refunded",
                    "charge_id": charge["id"],
                    "amount_cents": charge["amount_cents"],
                }
                self.refunded += 1
            self.refunds[key] = refund
            _bound(self.refunds)
            return 201, refund


def _bound(kept: OrderedDict[str, Any]) -> None:
    """Forget the oldest entries beyond :data:`MAX_KEPT_CHARGES` (memory stays bounded)."""
    while len(kept) > MAX_KEPT_CHARGES:
        kept.popitem(last=False)


SANDBOX = web.AppKey("sandbox", Sandbox)


async def create_charge(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    sandbox.requests += 1
    key = request.headers.get("Idempotency-Key", "")
    if not key:
        raise ApiError(400, "Idempotency-Key", "header required")
    body = await read_json(request, ChargeRequest)
    status, charge = await sandbox.charge(key, body, request.headers.get(REQUEST_ID_HEADER))
    return web.json_response(charge, status=status)


async def create_refund(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    sandbox.requests += 1
    key = request.headers.get("Idempotency-Key", "")
    if not key:
        raise ApiError(400, "Idempotency-Key", "header required")
    body = await read_json(request, RefundRequest)
    status, refund = await sandbox.refund(key, body)
    return web.json_response(refund, status=status)


async def get_charge(request: web.Request) -> web.Response:
    found = request.app[SANDBOX].charges.get(request.match_info["key"])
    if found is None:
        raise ApiError(404, "charge", "no charge for this idempotency key")
    return web.json_response(found)


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX].stats())


async def put_config(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    config = await read_json(request, Config)
    if config.latency_ms is not None:
        sandbox.latency_ms = float(config.latency_ms)
    if config.failure_rate is not None:
        sandbox.failure_rate = float(config.failure_rate)
    return web.json_response(sandbox.stats())


def build_app(settings: SandboxSettings) -> web.Application:
    app = create_app("payment-sandbox", settings)
    app[SANDBOX] = Sandbox(settings.payment_latency_ms, settings.payment_failure_rate)
    add_routes(
        app,
        [
            web.post("/charges", create_charge),
            web.get("/charges/{key}", get_charge),
            web.post("/refunds", create_refund),
            web.get("/_admin/stats", get_stats),
            web.put("/_admin/config", put_config),
        ],
    )
    return app


def main() -> None:
    settings = load_settings(SandboxSettings)
    run(build_app(settings), settings.payment_sandbox_port)


if __name__ == "__main__":
    main()
