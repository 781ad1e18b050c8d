"""The app's HTTP client session against real local servers: request id, timeouts, limits, gauges."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asynccore.app import add_routes
from asynccore.logs import REQUEST_ID_HEADER
from asynccore.pools.http import http_session, open_http_session
from asynccore.testing import wait_until

if TYPE_CHECKING:
    from conftest import PoolGauge, Serve

HTTP = web.AppKey("http", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


class Upstream:
    """A real local server: ``/echo`` returns the request id it received; ``/hold`` waits for release."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/echo", self.echo)
        app.router.add_get("/hold", self.hold)
        self.server = TestServer(app)

    async def echo(self, request: web.Request) -> web.Response:
        return web.json_response({"request_id": request.headers.get(REQUEST_ID_HEADER)})

    async def hold(self, request: web.Request) -> web.Response:
        self.arrived.set()
        async with asyncio.timeout(10):
            await self.release.wait()
        return web.Response(text="released")

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    upstream = Upstream()
    await upstream.server.start_server()
    yield upstream
    upstream.release.set()
    await upstream.server.close()


async def call_upstream(request: web.Request) -> web.Response:
    async with request.app[HTTP].get(request.app[UPSTREAM]) as resp:
        return web.json_response(await resp.json())


async def test_outgoing_calls_carry_the_current_request_id(
    upstream: Upstream, service: str, serve: Serve
) -> None:
    def setup(app: web.Application) -> None:
        app[UPSTREAM] = upstream.url("/echo")
        add_routes(app, [web.get("/call", call_upstream)])

    async with serve(service, http_session(HTTP), setup=setup) as (_, client):
        resp = await client.get("/call", headers={REQUEST_ID_HEADER: "req-abc-123"})
        assert resp.status == 200
        assert await resp.json() == {"request_id": "req-abc-123"}

        # Without an incoming id the app makes one and passes that one on.
        resp = await client.get("/call")
        assert (await resp.json())["request_id"] == resp.headers[REQUEST_ID_HEADER]


async def test_outside_a_request_no_id_is_invented_and_an_explicit_one_wins(upstream: Upstream) -> None:
    async with open_http_session() as session:
        async with session.get(upstream.url("/echo")) as resp:
            assert await resp.json() == {"request_id": None}
        async with session.get(upstream.url("/echo"), headers={REQUEST_ID_HEADER: "mine"}) as resp:
            assert await resp.json() == {"request_id": "mine"}


async def test_every_call_has_a_timeout(upstream: Upstream) -> None:
    async with open_http_session(timeout_s=0.2) as session:
        assert session.timeout.total == 0.2
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            async with session.get(upstream.url("/hold")) as resp:
                await resp.read()
        assert loop.time() - started < 2.0


async def test_connector_limits_are_applied() -> None:
    async with open_http_session(limit=7, limit_per_host=3) as session:
        connector = session.connector
        assert isinstance(connector, aiohttp.TCPConnector)
        assert (connector.limit, connector.limit_per_host) == (7, 3)


async def test_gauges_show_connections_in_use_and_waiting(
    upstream: Upstream, service: str, serve: Serve, pool_gauge: PoolGauge
) -> None:
    async with serve(service, http_session(HTTP, name="payments", limit=1, limit_per_host=1)) as (
        app,
        client,
    ):
        assert await pool_gauge(client, "size", service, "payments") == 1
        assert await pool_gauge(client, "in_use", service, "payments") == 0

        async def fetch() -> str:
            async with app[HTTP].get(upstream.url("/hold")) as resp:
                return await resp.text()

        first = asyncio.create_task(fetch())
        await upstream.arrived.wait()
        assert await pool_gauge(client, "in_use", service, "payments") == 1

        second = asyncio.create_task(fetch())

        async def one_waiting() -> bool:
            return await pool_gauge(client, "waiting", service, "payments") == 1

        await wait_until(one_waiting, timeout=3)
        upstream.release.set()
        assert list(await asyncio.gather(first, second)) == ["released", "released"]
        assert await pool_gauge(client, "waiting", service, "payments") == 0
