"""The API described as OpenAPI 3.1, served at ``/api/analytics/openapi.json``."""

from __future__ import annotations

from typing import Any

import msgspec

from stream.events import MAX_BATCH, Event
from stream.queries import BY
from stream.risk import RULES

__all__ = ["openapi_document"]


def _param(name: str, description: str, schema: dict[str, Any], *, where: str = "query") -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


_MS = {"type": "integer", "minimum": 0}
_RANGE = [
    _param("from", "window start, epoch ms of event time (default: `to` - 1 h)", _MS),
    _param("to", "window end (exclusive), epoch ms of event time (default: now)", _MS),
]
_ERRORS = {
    "description": "a parameter or field is invalid; `errors` names it",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
}

_UNAVAILABLE = {
    "description": "Redis, which holds every answer, is unreachable; retry after `Retry-After`",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
    }
    if headers:
        answer["headers"] = headers
    return answer


_CHALLENGE = {"WWW-Authenticate": {"description": "the schemes accepted", "schema": {"type": "string"}}}
_RETRY_AFTER = {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}
_INGEST_401 = _error("no credential, or neither the ingest token nor a valid JWT; `errors.token`", _CHALLENGE)
_INGEST_403 = _error(
    "a signed-in user posted a business event (`errors.events[i].type`: `order_placed` and `payment` come "
    "from the orders service) or another user's event (`errors.events[i].user_id`)"
)
_ADMIN_401 = _error("no credential; `errors.token`", _CHALLENGE)
_ADMIN_403 = _error("not the admin token; `errors.token`")
_SECURITY_SCHEMES = {
    "ingest": {
        "type": "http",
        "scheme": "bearer",
        "description": "STREAM_INGEST_TOKEN: a trusted producer; any event, any user",
    },
    "jwt": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "Token <jwt> or Bearer <jwt>: a signed-in user; their own page_view, click and "
        "add_to_cart events only (each event's user_id must be the token's sub)",
    },
    "admin": {
        "type": "http",
        "scheme": "bearer",
        "description": "STREAM_ADMIN_TOKEN: reads what names users (the risk alerts)",
    },
}


def _get(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                "422": _ERRORS,
                "503": _UNAVAILABLE,
            },
        }
    }


def _admin(operation: dict[str, Any]) -> dict[str, Any]:
    get = operation["get"]
    get["security"] = [{"admin": []}]
    get["responses"] |= {"401": _ADMIN_401, "403": _ADMIN_403}
    return operation


def openapi_document() -> dict[str, Any]:
    (event_schema,), components = msgspec.json.schema_components(
        [Event], ref_template="#/components/schemas/{name}"
    )
    components["Errors"] = {
        "type": "object",
        "properties": {
            "errors": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "asyncstack stream analytics", "version": "1.0.0"},
        "paths": {
            "/api/events": {
                "post": {
                    "summary": f"Ingest up to {MAX_BATCH} events; any invalid one rejects the whole batch",
                    "security": [{"ingest": []}, {"jwt": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["events"],
                                    "properties": {
                                        "events": {
                                            "type": "array",
                                            "items": event_schema,
                                            "maxItems": MAX_BATCH,
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": {"description": 'produced to Kafka: `{"accepted": n}`'},
                        "401": _INGEST_401,
                        "403": _INGEST_403,
                        "422": _ERRORS,
                        "503": _error("Kafka did not accept the events in time; `errors.kafka`"),
                    },
                }
            },
            "/api/analytics/summary": _get("Counts by type, unique users, revenue and data quality", _RANGE),
            "/api/analytics/funnel": _get("Unique users per funnel stage (view → cart → order)", _RANGE),
            "/api/analytics/top-products": _get(
                "Top products of the 5-minute hopping window ending with the minute of `at`",
                [
                    _param("by", "what to rank by", {"enum": sorted(BY), "default": "views"}),
                    _param("n", "how many", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}),
                    _param("at", "epoch ms inside the window's last minute (default: now)", _MS),
                ],
            ),
            "/api/recommendations/{product_id}": _get(
                "Products most viewed in the same sessions, decayed over time",
                [
                    _param("product_id", "the product", {"type": "string"}, where="path"),
                    _param("k", "how many", {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}),
                ],
            ),
            "/api/risk/alerts": _admin(
                _get(
                    "Newest risk alerts first (they name users: the admin token only)",
                    [
                        _param(
                            "limit",
                            "how many",
                            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                        ),
                        _param("rule", "only this rule", {"enum": list(RULES)}),
                        _param("user_id", "only this user", {"type": "string"}),
                    ],
                )
            ),
            "/api/live": {
                "get": {
                    "summary": "Server-Sent Events: one `aggregate` event per second",
                    "responses": {
                        "200": {"description": "text/event-stream", "content": {"text/event-stream": {}}},
                        "503": _error(
                            "too many streams open from this address or in all; `errors.request`",
                            _RETRY_AFTER,
                        ),
                    },
                }
            },
        },
        "components": {"schemas": components, "securitySchemes": _SECURITY_SCHEMES},
    }
