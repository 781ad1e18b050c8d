"""HTTP handlers: parse, authorise, call the logic module, shape the response. Nothing else."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from aiohttp import web

from asynccore.apidocs import add_docs_routes
from asynccore.app import add_routes
from asynccore.auth import Caller, require_caller
from asynccore.errors import ApiError
from asynccore.params import int_param
from orders import placement, products, store
from orders.batching import Batcher
from orders.db import transaction
from orders.lifecycle import move
from orders.models import NewOrder, NewProduct, Restock, parse_body
from orders.openapi import document
from orders.resources import DB
from orders.settings import OrdersSettings
from orders.sightings import Sightings
from orders.states import IllegalTransition, Status

__all__ = ["BATCHER", "CONFIG", "SIGHTINGS", "routes"]

CONFIG = web.AppKey("orders_settings", OrdersSettings)
SIGHTINGS = web.AppKey("orders_sightings", Sightings)
BATCHER = web.AppKey("orders_batcher", Batcher)
MAX_ID = 2**63 - 1
MAX_KEY_LENGTH = 200


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def _caller(request: web.Request) -> Caller:
    """The verified caller, refused (401) when the token names an identity orders cannot store whole."""
    caller = require_caller(request, request.app[CONFIG].jwt_secret.get_secret_value())
    problem = store.unstorable_claim(caller.user_id, caller.username)
    if problem is not None:
        raise ApiError(401, "token", problem, headers={"WWW-Authenticate": "Token"})
    return caller


def _require_admin(request: web.Request) -> None:
    """``Authorization: Bearer $ORDERS_ADMIN_TOKEN``, compared in constant time."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not token:
        raise ApiError(401, "token", "admin bearer token required", headers={"WWW-Authenticate": "Bearer"})
    expected = request.app[CONFIG].orders_admin_token.get_secret_value()
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


async def openapi(request: web.Request) -> web.Response:
    return _json(document())


async def create_product(request: web.Request) -> web.Response:
    _require_admin(request)
    new = await parse_body(request, NewProduct)
    product = await products.create_product(request.app[DB], new)
    return _json(product.to_json(), 201, {"Location": f"/api/products/{product.id}"})


async def list_products(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", 20, lo=1, hi=100)
    offset = int_param(request, "offset", 0, lo=0, hi=10**9)
    assert limit is not None and offset is not None
    page, count = await products.list_products(request.app[DB], limit=limit, offset=offset)
    return _json({"products": [product.to_json() for product in page], "count": count})


async def get_product(request: web.Request) -> web.Response:
    product = await products.get_product(request.app[DB], _path_id(request, "id", "product"))
    return _json(product.to_json())


async def restock_product(request: web.Request) -> web.Response:
    _require_admin(request)
    product_id = _path_id(request, "id", "product")
    body = await parse_body(request, Restock)
    product = await products.restock(request.app[DB], product_id, body.quantity)
    return _json(product.to_json())


async def create_order(request: web.Request) -> web.Response:
    caller = _caller(request)
    key = _idempotency_key(request)
    new = await parse_body(request, NewOrder)
    config = request.app[CONFIG]
    placed = await placement.place_order(
        request.app[DB],
        caller,
        new,
        key,
        strategy=config.orders_placement,
        lock_attempts=config.lock_retry_attempts,
        sightings=request.app[SIGHTINGS],
        batcher=request.app[BATCHER],
    )
    headers = {"Location": f"/api/orders/{placed.order.id}"}
    if placed.replayed:
        headers["Idempotent-Replayed"] = "true"
    return _json(placed.order.to_json(), 201, headers)


async def list_orders(request: web.Request) -> web.Response:
    caller = _caller(request)
    limit = int_param(request, "limit", 20, lo=1, hi=100)
    before = int_param(request, "before", None, lo=1, hi=MAX_ID)
    assert limit is not None
    page = await store.list_orders(request.app[DB], caller.user_id, limit=limit, before=before)
    next_before = page[-1].id if len(page) == limit else None
    return _json({"orders": [order.to_json() for order in page], "next_before": next_before})


async def get_order(request: web.Request) -> web.Response:
    caller = _caller(request)
    order_id = _path_id(request, "id", "order")
    async with transaction(request.app[DB]) as cur:
        order = await store.load_order(cur, order_id)
    if order is None or order.user_id != caller.user_id:  # another user's order is not even confirmed
        raise ApiError(404, "order", f"order {order_id} not found")
    return _json(order.to_json())


async def _move(request: web.Request, to: Status, owner: str | None) -> web.Response:
    order_id = _path_id(request, "id", "order")
    config = request.app[CONFIG]
    try:
        order = await move(
            request.app[DB], order_id, to, owner=owner, lock_attempts=config.lock_retry_attempts
        )
    except IllegalTransition as exc:
        raise ApiError(409, "status", f"order {order_id} is {exc.current.value}: {exc}") from None
    return _json(order.to_json())


async def cancel_order(request: web.Request) -> web.Response:
    return await _move(request, Status.CANCELLED, _caller(request).user_id)


async def fulfil_order(request: web.Request) -> web.Response:
    _require_admin(request)
    return await _move(request, Status.FULFILLED, None)


def routes(app: web.Application) -> None:
    add_routes(
        app,
        [
            web.get("/api/orders/openapi.json", openapi),
            web.post("/api/products", create_product),
            web.get("/api/products", list_products),
            web.get(r"/api/products/{id:\d+}", get_product),
            web.post(r"/api/products/{id:\d+}/restock", restock_product),
            web.post("/api/orders", create_order),
            web.get("/api/orders", list_orders),
            web.get(r"/api/orders/{id:\d+}", get_order),
            web.post(r"/api/orders/{id:\d+}/cancel", cancel_order),
            web.post(r"/api/orders/{id:\d+}/fulfil", fulfil_order),
        ],
    )
    add_docs_routes(app, "/api/orders/openapi.json")  # /api/orders/docs
