"""RED metrics by route template, latency buckets, the in-flight gauge, and event-loop lag."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from asynccore.app import SERVICE, add_routes, create_app
from asynccore.errors import ApiError
from asynccore.metrics import LATENCY_BUCKETS, loop_lag_ctx
from asynccore.settings import ServiceSettings
from asynccore.testing import wait_until


def make_app() -> web.Application:
    """A fresh service name per test: its series start from nothing, whatever ran before."""
    return create_app(f"test-{uuid.uuid4().hex[:8]}", ServiceSettings())


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_requests_are_counted_by_route_template_not_raw_path() -> None:
    app = make_app()
    service = app[SERVICE]

    async def article(request: web.Request) -> web.Response:
        if request.match_info["slug"] == "missing":
            raise ApiError(404, "article", "not found")
        return web.json_response({})

    add_routes(app, [web.get("/api/articles/{slug}", article)])
    async with TestClient(TestServer(app)) as client:
        for slug in ("how-to-train-a-dragon", "async-all-the-way", "missing"):
            async with client.get(f"/api/articles/{slug}"):
                pass
        async with client.get("/no/such/thing"):
            pass

    route = "/api/articles/{slug}"
    assert sample("http_requests_total", service=service, route=route, method="GET", status="200") == 2
    assert sample("http_requests_total", service=service, route=route, method="GET", status="404") == 1
    assert sample("http_requests_total", service=service, route="unmatched", method="GET", status="404") == 1
    raw = "/api/articles/how-to-train-a-dragon"
    assert sample("http_requests_total", service=service, route=raw, method="GET", status="200") is None
    assert sample("http_request_duration_seconds_count", service=service, route=route, method="GET") == 3


async def test_latency_lands_in_the_right_buckets() -> None:
    app = make_app()
    service = app[SERVICE]

    async def slowish(request: web.Request) -> web.Response:
        await asyncio.sleep(0.06)
        return web.json_response({})

    add_routes(app, [web.get("/slowish", slowish)])
    async with TestClient(TestServer(app)) as client, client.get("/slowish") as resp:
        assert resp.status == 200

    labels = {"service": service, "route": "/slowish", "method": "GET"}
    bucket_bounds = {
        s.labels["le"]
        for metric in REGISTRY.collect()
        if metric.name == "http_request_duration_seconds"
        for s in metric.samples
        if s.name.endswith("_bucket") and s.labels["service"] == service
    }
    assert bucket_bounds == {str(b) for b in LATENCY_BUCKETS} | {"+Inf"}
    assert sample("http_request_duration_seconds_bucket", le="0.05", **labels) == 0
    assert sample("http_request_duration_seconds_bucket", le="10.0", **labels) == 1
    assert sample("http_request_duration_seconds_bucket", le="+Inf", **labels) == 1
    duration = sample("http_request_duration_seconds_sum", **labels)
    assert duration is not None and 0.06 <= duration < 5


async def test_in_flight_gauge_counts_requests_being_served() -> None:
    app = make_app()
    service = app[SERVICE]
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.json_response({})

    add_routes(app, [web.get("/slow", slow)])

    def in_flight() -> float | None:
        return sample("http_requests_in_flight", service=service)

    async with TestClient(TestServer(app)) as client:
        request = asyncio.create_task(client.get("/slow"))
        await asyncio.wait_for(entered.wait(), timeout=5)
        assert in_flight() == 1
        release.set()
        resp = await request
        assert resp.status == 200
        resp.release()
        await wait_until(lambda: in_flight() == 0, timeout=5)


async def test_loop_lag_is_measured_and_a_blocked_loop_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    service = f"test-{uuid.uuid4().hex[:8]}"
    ctx = loop_lag_ctx(service, warn_after_s=0.1, interval_s=0.02)(web.Application())
    await anext(ctx)
    try:

        def samples() -> float:
            return sample("event_loop_lag_observed_seconds_count", service=service) or 0.0

        def samples_over_100ms() -> float:
            within = sample("event_loop_lag_observed_seconds_bucket", service=service, le="0.1") or 0.0
            return samples() - within

        await wait_until(lambda: samples() >= 2, timeout=5, message="lag probe sampling")
        blocked_before = samples_over_100ms()
        with caplog.at_level(logging.WARNING, logger="asynccore.metrics"):
            time.sleep(0.3)  # noqa: ASYNC251 -- blocking the loop is the point
            await wait_until(lambda: samples_over_100ms() > blocked_before, timeout=5, message="lag seen")
        assert any("event loop blocked" in r.message for r in caplog.records)
        await wait_until(lambda: (sample("event_loop_lag_seconds", service=service) or 1) < 0.1, timeout=5)
    finally:
        await anext(ctx, None)


async def test_head_on_a_get_route_is_recorded_as_head() -> None:
    app = make_app()
    service = app[SERVICE]

    async def item(request: web.Request) -> web.Response:
        return web.json_response({})

    add_routes(app, [web.get("/items/{id}", item)])
    async with TestClient(TestServer(app)) as client:
        for method in ("GET", "HEAD", "GET"):
            async with client.request(method, "/items/1") as resp:
                assert resp.status == 200
    labels = {"service": service, "route": "/items/{id}", "status": "200"}
    assert sample("http_requests_total", method="GET", **labels) == 2
    assert sample("http_requests_total", method="HEAD", **labels) == 1


async def test_a_redirect_raised_by_a_handler_is_recorded_with_its_status() -> None:
    app = make_app()
    service = app[SERVICE]

    async def item(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    add_routes(app, [web.get("/items/{id}", item)])
    async with TestClient(TestServer(app)) as client, client.get("/items/1", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["X-Request-ID"]
    labels = {"service": service, "route": "/items/{id}", "method": "GET"}
    assert sample("http_requests_total", status="302", **labels) == 1
    assert sample("http_request_duration_seconds_count", **labels) == 1


async def test_a_route_added_around_the_edge_is_refused_at_start_up() -> None:
    app = make_app()

    async def sneaky(request: web.Request) -> web.Response:
        return web.Response(text="no request id, no RED, no deadline")

    app.router.add_get("/sneaky", sneaky)
    with pytest.raises(RuntimeError, match="GET /sneaky"):
        async with TestServer(app):
            pass
