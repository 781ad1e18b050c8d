"""HTTP wiring: status codes, error bodies naming the field, auth, and the OpenAPI document."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import JWT_SECRET
from redis.asyncio import Redis

from asynccore.auth import issue_token
from asynccore.revocation import publish_token_version, version_key
from asynccore.testing import wait_until
from orders import errors
from orders.api import ERRORS
from orders.app import build_app
from orders.settings import OrdersSettings
from orders.states import IllegalTransition

Client = TestClient[web.Request, web.Application]
Headers = dict[str, str]
MAX_USER_ID, MAX_USERNAME = 64, 200  # orders.user_id VARCHAR(64), orders.username VARCHAR(200)


@pytest.fixture
async def client(settings: OrdersSettings) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_app(settings))) as client:
        yield client


async def _product(client: Client, admin: Headers, stock: int = 5, sku: str = "sku-1") -> dict[str, object]:
    resp = await client.post(
        "/api/products",
        json={"sku": sku, "name": "Thing", "price_cents": 1250, "stock": stock},
        headers=admin,
    )
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def test_product_lifecycle(client: Client, admin: Headers) -> None:
    created = await _product(client, admin)
    assert created["stock"] == 5 and isinstance(created["id"], int)
    resp = await client.get(f"/api/products/{created['id']}")
    assert resp.status == 200 and (await resp.json())["stock"] == 5
    resp = await client.post(f"/api/products/{created['id']}/restock", json={"quantity": 7}, headers=admin)
    assert resp.status == 200 and (await resp.json())["stock"] == 12
    resp = await client.get("/api/products", params={"limit": "10"})
    body = await resp.json()
    assert body["count"] == 1 and body["products"][0]["id"] == created["id"]
    resp = await client.post(
        "/api/products", json={"sku": "sku-1", "name": "x", "price_cents": 1, "stock": 1}, headers=admin
    )
    assert resp.status == 409 and "sku" in (await resp.json())["errors"]


async def test_admin_endpoints_need_the_admin_token(client: Client, user: Callable[[str], Headers]) -> None:
    body = {"sku": "a", "name": "a", "price_cents": 1, "stock": 1}
    assert (await client.post("/api/products", json=body)).status == 401
    assert (
        await client.post("/api/products", json=body, headers={"Authorization": "Bearer nope"})
    ).status == 403
    assert (await client.post("/api/products", json=body, headers=user("1"))).status == 401


async def test_order_flow_over_http(client: Client, admin: Headers, user: Callable[[str], Headers]) -> None:
    product = await _product(client, admin, stock=3)
    line = {"product_id": product["id"], "quantity": 2}
    headers = {**user("1"), "Idempotency-Key": "k1"}

    resp = await client.post("/api/orders", json={"items": [line]}, headers=headers)
    assert resp.status == 201
    order = await resp.json()
    assert order["status"] == "pending" and order["total_cents"] == 2500
    assert resp.headers["Location"] == f"/api/orders/{order['id']}"

    replay = await client.post("/api/orders", json={"items": [line]}, headers=headers)
    assert replay.status == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert (await replay.json())["id"] == order["id"]
    other = await client.post("/api/orders", json={"items": [{**line, "quantity": 1}]}, headers=headers)
    assert other.status == 422 and "Idempotency-Key" in (await other.json())["errors"]

    sold_out = await client.post("/api/orders", json={"items": [line]}, headers=user("2"))
    assert sold_out.status == 409
    assert list((await sold_out.json())["errors"]) == ["items[0].quantity"]

    assert (await client.get(f"/api/orders/{order['id']}", headers=user("1"))).status == 200
    assert (await client.get(f"/api/orders/{order['id']}", headers=user("2"))).status == 404
    assert (await client.post(f"/api/orders/{order['id']}/cancel", headers=user("2"))).status == 404

    resp = await client.post(f"/api/orders/{order['id']}/cancel", headers=user("1"))
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    again = await client.post(f"/api/orders/{order['id']}/cancel", headers=user("1"))
    assert again.status == 409 and "status" in (await again.json())["errors"]
    assert (await (await client.get(f"/api/products/{product['id']}")).json())["stock"] == 3


async def test_listing_is_paginated_and_private(
    client: Client, admin: Headers, user: Callable[[str], Headers]
) -> None:
    product = await _product(client, admin, stock=10)
    ids = []
    for _ in range(5):
        resp = await client.post(
            "/api/orders", json={"items": [{"product_id": product["id"], "quantity": 1}]}, headers=user("1")
        )
        ids.append((await resp.json())["id"])
    await client.post(
        "/api/orders", json={"items": [{"product_id": product["id"], "quantity": 1}]}, headers=user("2")
    )

    first = await (await client.get("/api/orders", params={"limit": "3"}, headers=user("1"))).json()
    assert [o["id"] for o in first["orders"]] == ids[::-1][:3]
    rest = await (
        await client.get(
            "/api/orders", params={"limit": "3", "before": str(first["next_before"])}, headers=user("1")
        )
    ).json()
    assert [o["id"] for o in rest["orders"]] == ids[::-1][3:] and rest["next_before"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "body"),
        ("[]", "body"),
        ('{"items": []}', "items"),
        ('{"items": [{"product_id": 1}]}', "items[0].quantity"),
        ('{"items": [{"product_id": "1", "quantity": 1}]}', "items[0].product_id"),
        ('{"items": [{"product_id": 1, "quantity": 0}]}', "items[0].quantity"),
        ('{"items": [{"product_id": 1, "quantity": 1.5}]}', "items[0].quantity"),
        (
            '{"items": [{"product_id": 1, "quantity": 1}, {"product_id": 1, "quantity": 2}]}',
            "items[1].product_id",
        ),
        ('{"items": [{"product_id": 99999999999999999999, "quantity": 1}]}', "items[0].product_id"),
    ],
)
async def test_bad_order_input_is_422_naming_the_field(
    client: Client, user: Callable[[str], Headers], body: str, field: str
) -> None:
    resp = await client.post(
        "/api/orders", data=body, headers={**user("1"), "Content-Type": "application/json"}
    )
    assert resp.status == 422, await resp.text()
    assert field in (await resp.json())["errors"]


async def test_other_client_errors_are_never_500(client: Client, user: Callable[[str], Headers]) -> None:
    assert (await client.post("/api/orders", json={"items": []})).status == 401
    assert (await client.get("/api/orders/1", headers=user("1"))).status == 404
    assert (await client.get("/api/orders/99999999999999999999999", headers=user("1"))).status == 404
    assert (await client.get("/api/products/abc")).status == 404
    bad_limit = await client.get("/api/orders", params={"limit": "0"}, headers=user("1"))
    assert bad_limit.status == 422 and "limit" in (await bad_limit.json())["errors"]
    unknown = await client.post(
        "/api/orders", json={"items": [{"product_id": 5, "quantity": 1}]}, headers=user("1")
    )
    assert unknown.status == 404 and "items[0].product_id" in (await unknown.json())["errors"]
    long_key = await client.post(
        "/api/orders",
        json={"items": [{"product_id": 5, "quantity": 1}]},
        headers={**user("1"), "Idempotency-Key": "k" * 201},
    )
    assert long_key.status == 422


async def test_openapi_document(client: Client) -> None:
    resp = await client.get("/api/orders/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/products", "/api/products/{id}", "/api/orders", "/api/orders/{id}/cancel"} <= set(
        doc["paths"]
    )
    assert doc["components"]["schemas"]["NewOrder"]["properties"]["items"]["items"] == {
        "$ref": "#/components/schemas/OrderLine"
    }


async def test_metrics_and_readiness(client: Client, admin: Headers, user: Callable[[str], Headers]) -> None:
    product = await _product(client, admin)
    await client.post(
        "/api/orders", json={"items": [{"product_id": product["id"], "quantity": 9}]}, headers=user("1")
    )
    text = await (await client.get("/metrics")).text()
    assert "orders_stockouts_total" in text and "orders_outbox_backlog" in text
    assert (await client.get("/readyz")).status == 200


async def test_keys_differing_only_in_case_are_two_orders(
    client: Client, admin: Headers, user: Callable[[str], Headers]
) -> None:
    product = await _product(client, admin, stock=5)
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    first = await client.post("/api/orders", json=body, headers={**user("1"), "Idempotency-Key": "key-abc"})
    second = await client.post("/api/orders", json=body, headers={**user("1"), "Idempotency-Key": "Key-AbC"})
    assert first.status == second.status == 201
    assert "Idempotent-Replayed" not in second.headers
    assert (await first.json())["id"] != (await second.json())["id"]


def _token(user_id: str, username: str) -> Headers:
    return {"Authorization": f"Token {issue_token(JWT_SECRET, user_id, username, 3600)}"}


@pytest.mark.parametrize(
    ("user_id", "username"),
    [
        ("u" * (MAX_USER_ID + 1), "ann"),
        ("7", "a" * (MAX_USERNAME + 1)),
        ("7", "\udcff-not-utf-8"),
    ],
)
async def test_claims_the_schema_cannot_store_are_refused_not_truncated(
    client: Client, admin: Headers, user_id: str, username: str
) -> None:
    product = await _product(client, admin)
    headers = _token(user_id, username)
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    for method, path, json in (("POST", "/api/orders", body), ("GET", "/api/orders", None)):
        resp = await client.request(method, path, json=json, headers=headers)
        assert resp.status == 401, await resp.text()
        assert list((await resp.json())["errors"]) == ["token"]
        assert resp.headers["WWW-Authenticate"] == "Token"
    # Nothing was written under a truncated (someone else's) id.
    owner = _token("u" * MAX_USER_ID, "ann")
    assert (await (await client.get("/api/orders", headers=owner)).json())["orders"] == []
    assert (await (await client.get(f"/api/products/{product['id']}")).json())["stock"] == 5


async def test_claims_at_the_schema_limits_are_stored_whole(client: Client, admin: Headers) -> None:
    product = await _product(client, admin)
    user_id, username = "u" * MAX_USER_ID, "é" * MAX_USERNAME
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    resp = await client.post("/api/orders", json=body, headers=_token(user_id, username))
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["user_id"] == user_id
    listed = await (await client.get("/api/orders", headers=_token(user_id, username))).json()
    assert [o["user_id"] for o in listed["orders"]] == [user_id]


async def test_client_errors_log_no_traceback(
    client: Client, admin: Headers, user: Callable[[str], Headers], caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed request is the client's error: a 4xx, and nothing at ERROR or with a traceback."""
    product = await _product(client, admin)
    line = {"items": [{"product_id": product["id"], "quantity": 1}]}
    caplog.clear()
    sent = [
        await client.post("/api/orders", data="{not json", headers=user("1")),
        await client.post("/api/orders", json={"items": [{"product_id": "x"}]}, headers=user("1")),
        await client.post("/api/orders", json=line, headers={"Authorization": "Token not.a.jwt"}),
        await client.post("/api/orders", json=line, headers=_token("7", "\udcff")),
        await client.post("/api/orders", json=line, headers={**user("1"), "Idempotency-Key": "k" * 201}),
        await client.get("/api/orders", params={"limit": "many"}, headers=user("1")),
        await client.get("/api/orders/123456789012345678901234567890", headers=user("1")),
        await client.post("/api/orders", data=b"x" * (3 * 1024 * 1024), headers=user("1")),
    ]
    assert all(400 <= resp.status < 500 for resp in sent), [resp.status for resp in sent]
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]


def test_every_domain_error_has_its_http_answer() -> None:
    """``api.ERRORS`` is looked up by exact type: a domain error missing there would be a 500."""
    domain = {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.OrdersError) and cls is not errors.OrdersError
    }
    assert set(ERRORS) == domain | {IllegalTransition}


async def test_a_token_revoked_by_a_password_change_is_a_401(
    client: Client, settings: OrdersSettings
) -> None:
    """The blog publishes the account's token version when the password changes (asynccore.revocation);
    orders refuses every older token from then on, within the second it remembers a version for."""
    old = {"Authorization": f"Token {issue_token(JWT_SECRET, 'rev-1', 'ann', 600)}"}
    new = {"Authorization": f"Token {issue_token(JWT_SECRET, 'rev-1', 'ann', 600, version=1)}"}
    assert (await client.get("/api/orders", headers=old)).status == 200
    redis = Redis.from_url(settings.revocation_url)
    try:
        assert await publish_token_version(redis, settings.revocation_prefix, "rev-1", 1, ttl_s=600)

        async def refused() -> bool:
            resp = await client.get("/api/orders", headers=old)
            return resp.status == 401 and "revoked" in (await resp.json())["errors"]["token"][0]

        await wait_until(refused, timeout=3, message="the revoked token still answers 200")
        assert (await client.get("/api/orders", headers=new)).status == 200
        assert (await client.post("/api/orders", json={"items": []}, headers=old)).status == 401
    finally:
        await redis.delete(version_key(settings.revocation_prefix, "rev-1"))
        await redis.aclose()
