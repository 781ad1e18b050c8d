"""The app factory: health routes, readiness naming the failing dependency, deadline, error shape."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from asynccore.app import (
    EDGE,
    READINESS,
    SERVICE,
    SETTINGS,
    TASKS,
    add_readiness_check,
    add_routes,
    create_app,
    no_deadline,
)
from asynccore.errors import ApiError
from asynccore.settings import ServiceSettings
from asynccore.testing import TcpProxy, free_port, wait_until


def make_app(**settings: Any) -> web.Application:
    return create_app(f"test-{uuid.uuid4().hex[:8]}", ServiceSettings(**settings))


async def tcp_check(port: int) -> None:
    """A readiness probe that really connects, as a pool's check would."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[int]:
    """A loopback TCP server that accepts connections and never answers: a live but hung dependency."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_create_app_sets_typed_keys() -> None:
    app = make_app(request_timeout_s=3)
    assert app[SERVICE].startswith("test-")
    assert app[SETTINGS].request_timeout_s == 3
    assert app[READINESS] == {}
    assert len(app[TASKS]) == 0


async def test_healthz_answers_ok_with_service_name() -> None:
    app = make_app()
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/healthz")
        assert resp.status == 200
        assert await resp.json() == {"status": "ok", "service": app[SERVICE]}


async def test_readyz_is_ready_when_every_dependency_answers(listener: int) -> None:
    app = make_app()
    add_readiness_check(app, "upstream", lambda: tcp_check(listener))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/readyz")
        assert resp.status == 200
        assert await resp.json() == {"status": "ready", "service": app[SERVICE]}


async def test_readyz_is_503_naming_the_dependency_nothing_listens_on(listener: int) -> None:
    app = make_app()
    dead_port = free_port()
    add_readiness_check(app, "upstream", lambda: tcp_check(listener))
    add_readiness_check(app, "payments", lambda: tcp_check(dead_port))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/readyz")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "unavailable"
        assert list(body["failing"]) == ["payments"]
        # The dependency is named; the driver's error text (addresses, versions) stays in the log.
        assert body["failing"]["payments"] == "unavailable"


async def test_readyz_follows_a_real_redis_through_a_cut_and_a_restore() -> None:
    proxy = TcpProxy("127.0.0.1", 6379)
    await proxy.start()
    redis = Redis(host="127.0.0.1", port=proxy.port, socket_timeout=0.5, socket_connect_timeout=0.5)
    app = make_app()
    add_readiness_check(app, "redis", redis.ping)
    try:
        async with TestClient(TestServer(app)) as client:

            async def is_ready() -> bool:
                async with client.get("/readyz") as resp:
                    return resp.status == 200

            assert await is_ready()
            await proxy.cut()
            async with client.get("/readyz") as resp:
                assert resp.status == 503
                assert list((await resp.json())["failing"]) == ["redis"]
            await proxy.restore()
            await wait_until(is_ready, timeout=5, message="ready again after redis came back")
    finally:
        await redis.aclose()
        await proxy.close()


async def test_readyz_bounds_a_hanging_check(listener: int) -> None:
    async def hangs() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener)
        try:
            await reader.read(1)  # the listener never writes
        finally:
            writer.close()

    app = make_app()
    add_readiness_check(app, "slowdb", hangs)
    async with TestClient(TestServer(app)) as client:
        started = time.monotonic()
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert (await resp.json())["failing"] == {"slowdb": "timed out"}
        assert time.monotonic() - started < 4


async def test_metrics_endpoint_serves_prometheus_text() -> None:
    app = make_app()
    async with TestClient(TestServer(app)) as client:
        await client.get("/healthz")
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
        assert (
            f'http_requests_total{{method="GET",route="/healthz",service="{app[SERVICE]}",status="200"}}'
            in (text)
        )
        assert "# TYPE http_request_duration_seconds histogram" in text


async def test_deadline_turns_a_slow_handler_into_504() -> None:
    app = make_app(request_timeout_s=0.2)
    cancelled = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    add_routes(app, [web.get("/stuck", stuck)])
    async with TestClient(TestServer(app)) as client:
        started = time.monotonic()
        resp = await client.get("/stuck")
        assert resp.status == 504
        assert await resp.json() == {"errors": {"request": ["deadline of 0.2s exceeded"]}}
        assert time.monotonic() - started < 2
        assert cancelled.is_set()  # the handler's work stopped, it does not linger
    labels = {"service": app[SERVICE], "route": "/stuck", "method": "GET", "status": "504"}
    assert REGISTRY.get_sample_value("http_requests_total", labels) == 1


async def test_no_deadline_handlers_may_outlive_the_deadline() -> None:
    app = make_app(request_timeout_s=0.1)

    @no_deadline
    async def stream(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.json_response({"done": True})

    add_routes(app, [web.get("/stream", stream)])
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/stream")
        assert resp.status == 200
        assert await resp.json() == {"done": True}


async def test_a_dependencys_own_timeout_is_not_reported_as_the_deadline() -> None:
    app = make_app(request_timeout_s=5)

    async def upstream_times_out(request: web.Request) -> web.Response:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)
        raise AssertionError("unreachable")

    add_routes(app, [web.get("/upstream", upstream_times_out)])
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/upstream")
        assert resp.status == 500
        assert await resp.json() == {"errors": {"server": ["internal error"]}}


async def test_api_error_becomes_the_json_error_shape() -> None:
    app = make_app()

    async def invalid(request: web.Request) -> web.Response:
        raise ApiError(422, "title", "can't be blank", headers={"X-Hint": "fill it"})

    add_routes(app, [web.post("/articles", invalid)])
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/articles")
        assert resp.status == 422
        assert resp.content_type == "application/json"
        assert resp.headers["X-Hint"] == "fill it"
        assert await resp.json() == {"errors": {"title": ["can't be blank"]}}


async def test_unexpected_exception_is_a_logged_500_in_json(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    add_routes(app, [web.get("/broken", broken)])
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.ERROR, logger="asynccore.app"):
            resp = await client.get("/broken")
        assert resp.status == 500
        assert resp.content_type == "application/json"
        assert await resp.json() == {"errors": {"server": ["internal error"]}}
        assert "boom" not in await resp.text()  # internals stay in the log
    record = next(r for r in caplog.records if r.message == "unhandled error")
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


async def test_aiohttp_http_errors_leave_in_the_json_shape() -> None:
    app = make_app()

    async def only_get(request: web.Request) -> web.Response:
        return web.json_response({})

    add_routes(app, [web.get("/thing", only_get)])
    async with TestClient(TestServer(app)) as client:
        missing = await client.get("/no/such/route")
        assert missing.status == 404
        assert await missing.json() == {"errors": {"path": ["Not Found"]}}
        wrong_method = await client.delete("/thing")
        assert wrong_method.status == 405
        assert "GET" in wrong_method.headers["Allow"]
        assert await wrong_method.json() == {"errors": {"body": ["Method Not Allowed"]}}


async def test_error_headers_go_on_the_edge_errors_under_their_prefix_only() -> None:
    app = make_app()

    async def private(request: web.Request) -> web.Response:
        raise ApiError(401, "token", "missing")

    async def fine(request: web.Request) -> web.Response:
        return web.json_response({})

    add_routes(app, [web.get("/api/me", private), web.get("/api/ok", fine), web.get("/page", private)])
    app[EDGE].add_error_headers("/api/", {"Access-Control-Allow-Origin": "*"})
    async with TestClient(TestServer(app)) as client:
        for path in ("/api/me", "/api/missing"):
            resp = await client.get(path)
            assert resp.status in (401, 404)
            assert resp.headers["Access-Control-Allow-Origin"] == "*", path
            assert resp.headers["X-Request-ID"]
        for path in ("/page", "/api/ok"):  # another prefix; an answer the handler made itself
            resp = await client.get(path)
            assert "Access-Control-Allow-Origin" not in resp.headers, path


async def test_errors_registered_as_unavailable_are_a_503_naming_the_dependency() -> None:
    class StoreError(Exception):
        pass

    app = make_app()
    app[EDGE].add_unavailable("store", StoreError, when=lambda exc: "lost" in str(exc))

    async def lost(request: web.Request) -> web.Response:
        raise StoreError("connection lost")

    async def broken(request: web.Request) -> web.Response:
        raise StoreError("bad statement")  # the store answered: a bug, not an outage

    add_routes(app, [web.get("/lost", lost), web.get("/broken", broken)])
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/lost")
        assert (resp.status, resp.headers["Retry-After"]) == (503, "1")
        assert list((await resp.json())["errors"]) == ["store"]
        resp = await client.get("/broken")
        assert resp.status == 500
        assert await resp.json() == {"errors": {"server": ["internal error"]}}


async def test_redirects_pass_through_untouched() -> None:
    app = make_app()

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/healthz")

    add_routes(app, [web.get("/old", moved)])
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/old", allow_redirects=False)
        assert resp.status == 302
        assert resp.headers["Location"] == "/healthz"
