"""The OpenAPI 3.1 document served at ``/api/orders/openapi.json``; request schemas come from the models."""

from __future__ import annotations

import functools
from typing import Any

from orders.models import NewOrder, NewProduct, Restock
from orders.states import Status

__all__ = ["document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _ok(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        401: "missing or invalid credentials (also: a token whose user id or username is longer "
        "than orders stores, 64 and 200 characters)",
        403: "not an admin token",
        404: "not found (also: another user's order)",
        409: "conflict: out of stock (names the item), illegal status change, or SKU taken",
        422: "invalid input; the key names the field, e.g. items[0].quantity",
        503: "too much lock contention; retry after Retry-After",
    }
    return {
        str(s): {"description": text[s], "content": {"application/json": {"schema": _ref("Errors")}}}
        for s in statuses
    }


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
_USER: list[dict[str, list[str]]] = [{"jwt": []}]
_ADMIN: list[dict[str, list[str]]] = [{"admin": []}]


@functools.cache
def document() -> dict[str, Any]:
    def schema(model: Any) -> dict[str, Any]:
        return dict(model.model_json_schema(ref_template="#/components/schemas/{model}"))

    order_schema = schema(NewOrder)
    line_schema = order_schema.pop("$defs")["OrderLine"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "asyncstack orders",
            "version": "1.0.0",
            "description": "Orders and inventory: stock never oversold, events via a transactional outbox.",
        },
        "paths": {
            "/api/products": {
                "get": {
                    "summary": "List products with their current stock",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                        },
                        {
                            "name": "offset",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "default": 0},
                        },
                    ],
                    "responses": {"200": _ok("ProductList", "a page of products"), **_errors(422)},
                },
                "post": {
                    "summary": "Create a product (admin)",
                    "security": _ADMIN,
                    "requestBody": _body("NewProduct"),
                    "responses": {"201": _ok("Product", "created"), **_errors(401, 403, 409, 422)},
                },
            },
            "/api/products/{id}": {
                "get": {
                    "summary": "A product with its current stock",
                    "parameters": [_ID],
                    "responses": {"200": _ok("Product", "the product"), **_errors(404)},
                }
            },
            "/api/products/{id}/restock": {
                "post": {
                    "summary": "Add stock (admin)",
                    "security": _ADMIN,
                    "parameters": [_ID],
                    "requestBody": _body("Restock"),
                    "responses": {"200": _ok("Product", "restocked"), **_errors(401, 403, 404, 422)},
                }
            },
            "/api/orders": {
                "get": {
                    "summary": "The caller's orders, newest first (keyset pagination)",
                    "security": _USER,
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                        },
                        {
                            "name": "before",
                            "in": "query",
                            "description": "next_before of the previous page",
                            "schema": {"type": "integer", "minimum": 1},
                        },
                    ],
                    "responses": {"200": _ok("OrderList", "a page of orders"), **_errors(401, 422)},
                },
                "post": {
                    "summary": "Place an order",
                    "description": (
                        "One transaction: stock is taken under the product row lock, never below zero. "
                        "With an Idempotency-Key, the same key and body returns the original order "
                        "(header Idempotent-Replayed: true); the same key with another body is a 422."
                    ),
                    "security": _USER,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                        }
                    ],
                    "requestBody": _body("NewOrder"),
                    "responses": {
                        "201": _ok("Order", "placed (or replayed)"),
                        **_errors(401, 404, 409, 422, 503),
                    },
                },
            },
            "/api/orders/{id}": {
                "get": {
                    "summary": "One of the caller's orders",
                    "security": _USER,
                    "parameters": [_ID],
                    "responses": {"200": _ok("Order", "the order"), **_errors(401, 404)},
                }
            },
            "/api/orders/{id}/cancel": {
                "post": {
                    "summary": "Cancel the caller's order unless fulfilled; its stock is released once, "
                    "and whatever was charged for it is refunded once (even a charge still in flight)",
                    "security": _USER,
                    "parameters": [_ID],
                    "responses": {"200": _ok("Order", "cancelled"), **_errors(401, 404, 409, 503)},
                }
            },
            "/api/orders/{id}/fulfil": {
                "post": {
                    "summary": "Mark a paid order fulfilled (admin)",
                    "security": _ADMIN,
                    "parameters": [_ID],
                    "responses": {"200": _ok("Order", "fulfilled"), **_errors(401, 403, 404, 409, 503)},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "jwt": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Token <jwt> or Bearer <jwt>",
                },
                "admin": {"type": "http", "scheme": "bearer", "description": "ORDERS_ADMIN_TOKEN"},
            },
            "schemas": {
                "NewProduct": schema(NewProduct),
                "Restock": schema(Restock),
                "NewOrder": order_schema,
                "OrderLine": line_schema,
                "Product": {
                    "type": "object",
                    "required": ["id", "sku", "name", "price_cents", "stock", "created_at"],
                    "properties": {
                        "id": {"type": "integer"},
                        "sku": {"type": "string"},
                        "name": {"type": "string"},
                        "price_cents": {"type": "integer"},
                        "stock": {"type": "integer", "minimum": 0},
                        "created_at": {"type": "string", "format": "date-time"},
                    },
                },
                "ProductList": {
                    "type": "object",
                    "properties": {
                        "products": {"type": "array", "items": _ref("Product")},
                        "count": {"type": "integer"},
                    },
                },
                "Order": {
                    "type": "object",
                    "required": [
                        "id",
                        "status",
                        "user_id",
                        "items",
                        "total_cents",
                        "refund",
                        "created_at",
                        "updated_at",
                    ],
                    "properties": {
                        "id": {"type": "integer"},
                        "status": {"enum": [status.value for status in Status]},
                        "user_id": {"type": "string"},
                        "items": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "product_id": {"type": "integer"},
                                    "quantity": {"type": "integer"},
                                    "price_cents": {"type": "integer"},
                                },
                            },
                        },
                        "total_cents": {"type": "integer"},
                        "refund": {
                            "description": "null while no money is to go back; a cancelled (or "
                            "payment_failed) order whose payment was under way is refunded: "
                            "requested, then refunded (amount_cents) or not_charged (nothing had "
                            "been captured; the payment was voided)",
                            "oneOf": [
                                {"type": "null"},
                                {
                                    "type": "object",
                                    "required": ["status"],
                                    "properties": {
                                        "status": {"enum": ["requested", "refunded", "not_charged"]},
                                        "amount_cents": {"type": "integer"},
                                    },
                                },
                            ],
                        },
                        "created_at": {"type": "string", "format": "date-time"},
                        "updated_at": {"type": "string", "format": "date-time"},
                    },
                },
                "OrderList": {
                    "type": "object",
                    "properties": {
                        "orders": {"type": "array", "items": _ref("Order")},
                        "next_before": {"type": ["integer", "null"]},
                    },
                },
                "Errors": {
                    "type": "object",
                    "required": ["errors"],
                    "properties": {
                        "errors": {
                            "type": "object",
                            "additionalProperties": {"type": "array", "items": {"type": "string"}},
                        }
                    },
                },
            },
        },
    }
