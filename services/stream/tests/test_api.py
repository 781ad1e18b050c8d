"""The HTTP API in this process (app + consumer), against a real Kafka broker and real Redis."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from stream_testkit import Topics, admin_auth, ingest_auth, now_ms, stored_total

from asynccore.testing import wait_until


def events(n: int, **override: object) -> list[dict[str, object]]:
    ts = now_ms() - 5_000
    out: list[dict[str, object]] = [
        {
            "event_id": f"api-{i}",
            "type": "page_view",
            "user_id": f"u{i % 7}",
            "product_id": f"p{i % 3}",
            "ts": ts,
        }
        for i in range(n)
    ]
    out[-1].update(override)
    return out


async def test_posted_events_are_counted_and_an_invalid_batch_produces_nothing(
    consuming_api: aiohttp.ClientSession, redis: Redis, prefix: str, topics: Topics
) -> None:
    api = consuming_api
    bad = events(3)
    bad[1]["ts"] = "yesterday"
    async with api.post("/api/events", headers=ingest_auth(), json={"events": bad}) as resp:
        assert resp.status == 422
        assert await resp.json() == {"errors": {"events[1].ts": ["Expected `int`, got `str`"]}}
    async with api.post(
        "/api/events", headers=ingest_auth(), json={"events": events(4, type="order_placed", price=12.5)}
    ) as resp:
        assert resp.status == 202
        assert await resp.json() == {"accepted": 4}
    # The same batch again (a client retry): produced, but every id is already counted.
    async with api.post(
        "/api/events", headers=ingest_auth(), json={"events": events(4, type="order_placed", price=12.5)}
    ) as resp:
        assert resp.status == 202

    async def processed() -> bool:
        return await stored_total(redis, prefix, topics.events, topics.partitions) == 8

    await wait_until(processed, timeout=30, message="8 events processed (none of the invalid batch)")
    async with api.get("/api/analytics/summary") as resp:
        summary = await resp.json()
    assert summary["counts"]["page_view"] == 3
    assert summary["counts"]["order_placed"] == 1
    assert (summary["revenue"], summary["duplicates"], summary["unique_users"]) == (12.5, 4, 4)


async def test_top_products_gauge_follows_the_current_window(
    consuming_api: aiohttp.ClientSession, prefix: str
) -> None:
    product = f"top-{prefix[-8:]}"
    views = [dict(event, product_id=product, event_id=f"top-{i}") for i, event in enumerate(events(5))]
    async with consuming_api.post("/api/events", headers=ingest_auth(), json={"events": views}) as resp:
        assert resp.status == 202

    def shown() -> bool:
        return REGISTRY.get_sample_value("stream_top_product_events", {"product": product}) == 5

    await wait_until(shown, timeout=30, message=f"{product} shown with 5 views in the top-products gauge")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": events(2, user_id=None)}, "events[1].user_id"),
        ({"events": events(1, type="order_placed")}, "events[0].price"),
        ({"events": events(1, ts=now_ms() + 3_600_000)}, "events[0].ts"),
        ({"events": events(1001)}, "events"),
        ({"events": []}, "events"),
        ({"evnts": []}, "events"),
        ([1], "body"),
    ],
)
async def test_ingest_validation(api: aiohttp.ClientSession, body: object, field: str) -> None:
    async with api.post("/api/events", headers=ingest_auth(), data=orjson.dumps(body)) as resp:
        assert resp.status == 422
        assert list((await resp.json())["errors"]) == [field]
    async with api.post("/api/events", headers=ingest_auth(), data=b"{not json") as resp:
        assert resp.status == 422
        assert list((await resp.json())["errors"]) == ["body"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/analytics/summary?from=abc", "from"),
        ("/api/analytics/summary?from=10&to=5", "from"),
        ("/api/analytics/summary?from=0&to=999999999999", "from"),
        ("/api/analytics/summary?to=-1", "to"),
        ("/api/analytics/funnel?to=x", "to"),
        ("/api/analytics/top-products?by=likes", "by"),
        ("/api/analytics/top-products?n=0", "n"),
        ("/api/analytics/top-products?at=soon", "at"),
        ("/api/recommendations/p1?k=51", "k"),
        ("/api/risk/alerts?limit=many", "limit"),
        ("/api/risk/alerts?rule=speeding", "rule"),
    ],
)
async def test_bad_query_parameters_are_422_naming_them(
    api: aiohttp.ClientSession, path: str, field: str
) -> None:
    async with api.get(path, headers=admin_auth() if path.startswith("/api/risk/") else None) as resp:
        assert resp.status == 422
        assert list((await resp.json())["errors"]) == [field]


async def test_read_endpoints_and_openapi(api: aiohttp.ClientSession) -> None:
    for path in (
        "/api/analytics/summary",
        "/api/analytics/funnel",
        "/api/analytics/top-products?by=purchases&n=3",
        "/api/recommendations/p1",
        "/api/risk/alerts",
        "/readyz",
    ):
        async with api.get(path, headers=admin_auth() if path.startswith("/api/risk/") else None) as resp:
            assert resp.status == 200, (path, await resp.text())
    async with api.get("/api/analytics/openapi.json") as resp:
        doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/events", "/api/analytics/summary", "/api/live", "/api/recommendations/{product_id}"} <= set(
        doc["paths"]
    )


async def test_live_sends_an_aggregate_every_second(api: aiohttp.ClientSession) -> None:
    async with api.get("/api/live") as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        frames = []
        async with asyncio.timeout(5):
            async for line in resp.content:
                if line.startswith(b"data: "):
                    frames.append(orjson.loads(line[6:]))
                    if len(frames) == 2:
                        break
    assert frames[1]["ts"] - frames[0]["ts"] >= 900
    assert set(frames[0]["last_minute"]["counts"]) == {
        "page_view",
        "click",
        "add_to_cart",
        "order_placed",
        "payment",
    }
