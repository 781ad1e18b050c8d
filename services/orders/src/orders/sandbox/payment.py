"""A payment-provider sandbox: a real HTTP server with settable latency and failure rate.

``POST /charges`` with an ``Idempotency-Key`` header creates a charge (201) or returns the one that key
created (200), like real providers do. Latency and failure rate come from the environment
(``PAYMENT_LATENCY_MS``, ``PAYMENT_FAILURE_RATE``) and can be changed at run time with
``PUT /_admin/config``; ``GET /_admin/stats`` counts requests, failures and charges so tests can check
that nothing was charged twice.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, OrderedDict
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field

from asynccore.app import add_routes, create_app, run
from asynccore.errors import ApiError
from asynccore.logs import REQUEST_ID_HEADER
from asynccore.settings import ServiceSettings, load_settings
from orders.models import StrictModel, parse_body

__all__ = ["Sandbox", "SandboxSettings", "build_app", "main"]

MAX_KEPT_CHARGES = 100_000


class SandboxSettings(ServiceSettings):
    payment_sandbox_port: int = Field(default=8090, gt=0, lt=65536)
    payment_latency_ms: float = Field(default=0.0, ge=0)
    payment_failure_rate: float = Field(default=0.0, ge=0, le=1)


class Config(StrictModel):
    latency_ms: Annotated[float | int, Field(ge=0, le=60_000)] | None = None
    failure_rate: Annotated[float | int, Field(ge=0, le=1)] | None = None


class ChargeRequest(StrictModel):
    order_id: Annotated[int, Field(gt=0)]
    amount_cents: Annotated[int, Field(ge=0)]
    currency: Annotated[str, Field(min_length=3, max_length=3)] = "EUR"


class Sandbox:
    def __init__(self, latency_ms: float, failure_rate: float) -> None:
        self.latency_ms = latency_ms
        self.failure_rate = failure_rate
        self.requests = 0
        self.failures = 0
        self.replays = 0
        self.created = 0
        self.charges: OrderedDict[str, dict[str, Any]] = OrderedDict()
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
        }

    async def charge(
        self, key: str, request: ChargeRequest, request_id: str | None
    ) -> tuple[int, dict[str, Any]]:
        """``(201, new charge)``, ``(200, the charge this key made)``, or ApiError 503 (simulated).

        Requests with one key are handled one at a time, as a real provider does: a retry that arrives
        while the first attempt is still being processed waits for it and then gets its charge.
        """
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                if self.latency_ms:
                    await asyncio.sleep(self.latency_ms / 1000)
                if random.random() < self.failure_rate:  # a simulated outage, not security
                    self.failures += 1
                    raise ApiError(503, "provider", "sandbox failure (simulated)")
                existing = self.charges.get(key)
                if existing is not None:
                    self.replays += 1
                    return 200, existing
                created = {
                    "id": f"ch_{uuid.uuid4().hex}",
                    "status": "captured",
                    "request_id": request_id,  # which caller's request made it (X-Request-ID)
                    **request.model_dump(),
                }
                self.charges[key] = created
                self.created += 1
                if len(self.charges) > MAX_KEPT_CHARGES:
                    self.charges.popitem(last=False)
                return 201, created
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]


SANDBOX = web.AppKey("sandbox", Sandbox)


async def create_charge(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    sandbox.requests += 1
    key = request.headers.get("Idempotency-Key", "")
    if not key:
        raise ApiError(400, "Idempotency-Key", "header required")
    body = await parse_body(request, ChargeRequest)
    status, charge = await sandbox.charge(key, body, request.headers.get(REQUEST_ID_HEADER))
    return web.json_response(charge, status=status)


async def get_charge(request: web.Request) -> web.Response:
    found = request.app[SANDBOX].charges.get(request.match_info["key"])
    if found is None:
        raise ApiError(404, "charge", "no charge for this idempotency key")
    return web.json_response(found)


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SANDBOX].stats())


async def put_config(request: web.Request) -> web.Response:
    sandbox = request.app[SANDBOX]
    config = await parse_body(request, Config)
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
