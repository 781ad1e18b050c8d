"""HTTP handlers: parse, authorise, call the logic module, shape the response. Nothing else.

The domain raises its own errors (``orders.errors``); :data:`ERRORS` is the one table that turns
each into a status and the field it names, applied to every route at registration.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from asynccore.app import add_routes
from asynccore.auth import Caller, require_caller
from asynccore.errors import ApiError
from asynccore.params import int_param
from asynccore.revocation import REVOCATIONS
from asynccore.web import add_openapi_routes, json_response, read_json
from orders import products, store
from orders.batching import Placer
from orders.db import transaction
from orders.errors import (
    Contention,
    DuplicateLine,
    KeyInProgress,
    KeyReused,
    NotFound,
    OrdersError,
    OutOfStock,
    SkuTaken,
    StockLimit,
    UnknownProduct,
)
from orders.lifecycle import move
from orders.models import NewOrder, NewProduct, Restock
from orders.openapi import document
from orders.resources import DB, SETTINGS
from orders.states import IllegalTransition, Status

__all__ = ["ERRORS", "PLACER", "http_error", "routes"]

# A Batcher in the service (the benchmark's naive baseline puts its own Placer here). Not in
# resources.py with the other keys: that module is shared with the worker, which places no orders.
PLACER = web.AppKey("orders_placer", Placer)
MAX_ID = 2**63 - 1
MAX_KEY_LENGTH = 200

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Http:
    """How a domain error leaves: its status, the request field it names, extra headers."""

    status: int
    field: Callable[[Any], str]
    headers: dict[str, str] | None = None


ERRORS: dict[type[OrdersError], Http] = {
    NotFound: Http(404, lambda e: e.what),
    UnknownProduct: Http(404, lambda e: f"items[{e.index}].product_id"),
    DuplicateLine: Http(422, lambda e: f"items[{e.index}].product_id"),
    OutOfStock: Http(409, lambda e: f"items[{e.line.index}].quantity"),
    KeyReused: Http(422, lambda _: "Idempotency-Key"),
    KeyInProgress: Http(409, lambda _: "Idempotency-Key"),
    IllegalTransition: Http(409, lambda _: "status"),
    SkuTaken: Http(409, lambda _: "sku"),
    StockLimit: Http(422, lambda _: "quantity"),
    Contention: Http(503, lambda _: "stock", {"Retry-After": "1"}),
}


def http_error(exc: OrdersError) -> ApiError:
    """``exc`` as the edge answers it (:data:`ERRORS`); a domain error missing there is a bug (500)."""
    http = ERRORS[type(exc)]
    return ApiError(http.status, http.field(exc), str(exc), headers=http.headers)


def _answering_domain_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def answered(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except OrdersError as exc:
            raise http_error(exc) from None

    return answered


async def _caller(request: web.Request) -> Caller:
    """The verified caller, refused (401) when the token names an identity orders cannot store whole,
    or a password change in the blog revoked it (asynccore.revocation)."""
    caller = require_caller(request, request.app[SETTINGS].jwt_secret.get_secret_value())
    problem = store.unstorable_claim(caller.user_id, caller.username)
    if problem is not None:
        raise ApiError(401, "token", problem, headers={"WWW-Authenticate": "Token"})
    return await request.app[REVOCATIONS].check(caller)


def _require_admin(request: web.Request) -> None:
    """``Authorization: Bearer $ORDERS_ADMIN_TOKEN``, compared in constant time."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not token:
        raise ApiError(401, "token", "admin bearer token required", headers={"WWW-Authenticate": "Bearer"})
    expected = request.app[SETTINGS].orders_admin_token.get_secret_value()
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise ApiError(403, "token", "not an admin token")


def _path_id(request: web.Request, name: str, what: str) -> int:
    value = int(request.match_info[name])  # the route only matches digits
    if value > MAX_ID:
        raise ApiError(404, what, f"{what} {value} not found")
    return value


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 0 < len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise ApiError(422, "Idempotency-Key", f"must be 1-{MAX_KEY_LENGTH} printable characters")
    return key


async def create_product(request: web.Request) -> web.Response:
    _require_admin(request)
    new = await read_json(request, NewProduct)
    product = await products.create_product(request.app[DB], new)
    return json_response(product.to_json(), 201, headers={"Location": f"/api/products/{product.id}"})


async def list_products(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 20, lo=1, hi=100)
    offset = int_param(request, "offset", 0, lo=0, hi=10**9)
    assert limit is not None and offset is not None
    page, count = await products.list_products(request.app[DB], limit=limit, offset=offset)
    return json_response({"products": [product.to_json() for product in page], "count": count})


async def get_product(request: web.Request) -> web.Response:
    product = await products.get_product(request.app[DB], _path_id(request, "id", "product"))
    return json_response(product.to_json())


async def restock_product(request: web.Request) -> web.Response:
    _require_admin(request)
    product_id = _path_id(request, "id", "product")
    body = await read_json(request, Restock)
    product = await products.restock(request.app[DB], product_id, body.quantity)
    return json_response(product.to_json())


async def create_order(request: web.Request) -> web.Response:
    caller = await _caller(request)
    key = _idempotency_key(request)
    new = await read_json(request, NewOrder)
    placed = await request.app[PLACER].place_order(caller, new, key)
    headers = {"Location": f"/api/orders/{placed.order.id}"}
    if placed.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(placed.order.to_json(), 201, headers=headers)


async def list_orders(request: web.Request) -> web.Response:
    caller = await _caller(request)
    limit = int_param(request, "limit", 20, lo=1, hi=100)
    before = int_param(request, "before", None, lo=1, hi=MAX_ID)
    assert limit is not None
    page = await store.list_orders(request.app[DB], caller.user_id, limit=limit, before=before)
    next_before = page[-1].id if len(page) == limit else None
    return json_response({"orders": [order.to_json() for order in page], "next_before": next_before})


async def get_order(request: web.Request) -> web.Response:
    caller = await _caller(request)
    order_id = _path_id(request, "id", "order")
    async with transaction(request.app[DB]) as cur:
        order = await store.load_order(cur, order_id)
    if order is None or order.user_id != caller.user_id:  # another user's order is not even confirmed
        raise NotFound("order", order_id)
    return json_response(order.to_json())


async def _move(request: web.Request, to: Status, owner: str | None) -> web.Response:
    order_id = _path_id(request, "id", "order")
    lock_attempts = request.app[SETTINGS].lock_retry_attempts
    order = await move(request.app[DB], order_id, to, owner=owner, lock_attempts=lock_attempts)
    return json_response(order.to_json())


async def cancel_order(request: web.Request) -> web.Response:
    return await _move(request, Status.CANCELLED, (await _caller(request)).user_id)


async def fulfil_order(request: web.Request) -> web.Response:
    _require_admin(request)
    return await _move(request, Status.FULFILLED, None)


def routes(app: web.Application) -> None:
    table = [
        web.post("/api/products", create_product),
        web.get("/api/products", list_products),
        web.get(r"/api/products/{id:\d+}", get_product),
        web.post(r"/api/products/{id:\d+}/restock", restock_product),
        web.post("/api/orders", create_order),
        web.get("/api/orders", list_orders),
        web.get(r"/api/orders/{id:\d+}", get_order),
        web.post(r"/api/orders/{id:\d+}/cancel", cancel_order),
        web.post(r"/api/orders/{id:\d+}/fulfil", fulfil_order),
    ]
    add_routes(
        app,
        [web.RouteDef(r.method, r.path, _answering_domain_errors(r.handler), r.kwargs) for r in table],
    )
    add_openapi_routes(app, "/api/orders/openapi.json", document())  # and /api/orders/docs
