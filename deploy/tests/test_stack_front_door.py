"""nginx as the front door: routing per the contract table, request ids, write limits, JSON errors;
and the one door: the services behind it listen on loopback only (limits: test_stack_limits.py).

Routing is read back from nginx's own JSON access log (``upstream_addr`` of the request with our
X-Request-ID), so it is checked for every contract path whether or not that service exists yet.
"""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess

import aiohttp
import psutil
import pytest
from conftest import HEX_ID, PROCESS_PORTS, Stack

from asynccore.testing import wait_until

pytestmark = pytest.mark.stack

TIMEOUT = aiohttp.ClientTimeout(total=10)

ROUTES = [
    ("/api/articles", "blog"),
    ("/api/articles/how-to-train-your-dragon/comments", "blog"),
    ("/api/articles/feed", "blog"),
    ("/api/users/login", "blog"),
    ("/api/user", "blog"),
    ("/api/profiles/jake", "blog"),
    ("/api/tags", "blog"),
    ("/api/openapi.json", "blog"),
    ("/", "blog"),
    ("/article/how-to-train-your-dragon", "blog"),
    ("/sitemap.xml", "blog"),
    ("/api/orders", "orders"),
    ("/api/orders/42", "orders"),
    ("/api/products", "orders"),
    ("/api/products/7", "orders"),
    ("/api/orders/openapi.json", "orders"),
    ("/api/events", "stream"),
    ("/api/analytics/top-products", "stream"),
    ("/api/analytics/openapi.json", "stream"),
    ("/api/recommendations/user-1", "stream"),
    ("/api/risk/alerts", "stream"),
    ("/api/live", "stream"),
    ("/_/blog/healthz", "blog"),
    ("/_/orders/readyz", "orders"),
    ("/_/stream/healthz", "stream"),
]


async def get(stack: Stack, path: str, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    """GET through the front door; headers only (the body of /api/live never ends)."""
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(stack.front + path, headers=headers, allow_redirects=False) as resp,
    ):
        return resp


async def logged(stack: Stack, request_id: str) -> dict[str, object]:
    """The access-log entry of a request (nginx writes it just after the response leaves)."""
    await wait_until(lambda: stack.access_log_entry(request_id) is not None, timeout=5, message=request_id)
    entry = stack.access_log_entry(request_id)
    assert entry is not None
    return entry


def tried(entry: dict[str, object]) -> set[str]:
    """The upstream servers nginx tried for a request ("a, b" on retry; empty when not proxied)."""
    return {addr.strip() for addr in str(entry["upstream_addr"]).replace(" : ", ",").split(",")} - {"-", ""}


@pytest.mark.parametrize(("path", "service"), ROUTES)
async def test_contract_paths_reach_their_service(
    stack: Stack, request_id: str, path: str, service: str
) -> None:
    resp = await get(stack, path, {"X-Request-ID": request_id})
    entry = await logged(stack, request_id)
    assert entry["uri"] == path
    assert tried(entry), f"{path} was not proxied (status {resp.status})"
    # While every replica is marked failed, nginx logs the upstream's name instead of an address.
    assert tried(entry) <= stack.upstream_addrs(service) | {service}


@pytest.mark.parametrize("path", ["/api/nothing-here", "/api/articlesX", "/metrics", "/healthz", "/readyz"])
async def test_unknown_apis_and_service_internals_are_not_proxied(
    stack: Stack, request_id: str, path: str
) -> None:
    resp = await get(stack, path, {"X-Request-ID": request_id})
    assert resp.status == 404
    assert resp.content_type == "application/json"
    assert not tried(await logged(stack, request_id))


@pytest.mark.parametrize("service", ["blog", "orders", "stream"])
async def test_a_running_service_answers_its_health_check_through_the_front_door(
    stack: Stack, service: str
) -> None:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(f"{stack.front}/_/{service}/healthz") as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["service"] == service


@pytest.mark.parametrize("service", ["blog", "orders", "stream"])
async def test_request_id_is_generated_when_absent_and_reaches_the_service(
    stack: Stack, service: str
) -> None:
    resp = await get(stack, f"/_/{service}/healthz")
    request_id = resp.headers["X-Request-ID"]
    assert HEX_ID.match(request_id)
    # nginx logs the id it generated. A running service echoes the id it *received* (and would
    # make up a different one if none came), so equal ids prove nginx passed its id upstream.
    assert (await logged(stack, request_id))["status"] == resp.status
    assert resp.headers.getall("X-Request-ID") == [request_id]


async def test_a_client_request_id_is_kept(stack: Stack, request_id: str) -> None:
    resp = await get(stack, "/_/blog/healthz", {"X-Request-ID": request_id})
    assert resp.headers["X-Request-ID"] == request_id
    await logged(stack, request_id)


@pytest.mark.parametrize("unsafe", ['quote"and space', "x" * 200, "line\\nbreak"])
async def test_an_unsafe_request_id_is_replaced(stack: Stack, unsafe: str) -> None:
    resp = await get(stack, "/_/blog/healthz", {"X-Request-ID": unsafe})
    assert HEX_ID.match(resp.headers["X-Request-ID"])
    await logged(stack, resp.headers["X-Request-ID"])


async def test_json_is_gzipped_for_clients_that_accept_it(stack: Stack) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT, auto_decompress=False) as session:
        async with session.get(
            f"{stack.front}/api/openapi.json", headers={"Accept-Encoding": "gzip"}
        ) as resp:
            assert resp.status == 200
            assert resp.headers.get("Content-Encoding") == "gzip"
            compressed = len(await resp.read())
        async with session.get(
            f"{stack.front}/api/openapi.json", headers={"Accept-Encoding": "identity"}
        ) as resp:
            assert "Content-Encoding" not in resp.headers
            assert compressed < len(await resp.read()) / 2


async def test_live_events_pass_through_unbuffered(stack: Stack) -> None:
    loop = asyncio.get_running_loop()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
        session.get(f"{stack.front}/api/live") as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        # The service sends one small event a second: each must arrive on its own, not in a batch
        # once a proxy buffer fills.
        arrivals: list[float] = []
        while len(arrivals) < 3:
            line = await resp.content.readline()
            if line.startswith(b"event: "):
                arrivals.append(loop.time())
    assert arrivals[2] - arrivals[0] > 1.0


async def test_writes_beyond_the_limit_get_429_and_reads_never_do(stack: Stack) -> None:
    # The stack runs with 5 writes/s and a burst of 10 per client address.
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:

        async def send(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
            async with session.request(method, stack.front + path, json={"article": {}}) as resp:
                return resp.status, dict(resp.headers), await resp.read()

        writes = await asyncio.gather(*(send("POST", "/api/articles") for _ in range(40)))
        limited = [w for w in writes if w[0] == 429]
        assert len(limited) >= 15, [w[0] for w in writes]
        _, headers, body = limited[0]
        assert headers["Content-Type"] == "application/json"
        assert body.startswith(b'{"errors":{')
        assert headers["Retry-After"] == "1"
        assert HEX_ID.match(headers["X-Request-ID"])
        # Other write methods share the client's budget, which the burst above has spent.
        assert (await send("DELETE", "/api/articles/some-slug"))[0] == 429

        reads = await asyncio.gather(*(send("GET", "/api/tags") for _ in range(40)))
        assert 429 not in {r[0] for r in reads}


async def test_a_body_over_the_limit_is_refused_with_json(stack: Stack) -> None:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.put(f"{stack.front}/api/user", data=b"x" * (2 * 1024 * 1024)) as resp,
    ):
        assert resp.status == 413
        assert "errors" in await resp.json()


def test_nginx_accepts_the_generated_config(stack: Stack) -> None:
    checked = subprocess.run(
        ["nginx", "-t", "-e", "stderr", "-p", f"{stack.run_dir}/nginx/", "-c", str(stack.nginx_conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


# The stack's Python services: asynccore's run() binds BIND_HOST, which the runner sets to loopback.
SERVICE_PROCESSES = [
    "blog1",
    "blog2",
    "orders1",
    "orders2",
    "orders-worker",
    "payment-sandbox",
    "smtp-sink",
    "stream1",
    "stream2",
]


@pytest.mark.parametrize("process", SERVICE_PROCESSES)
def test_a_service_listens_on_loopback_only(stack: Stack, process: str) -> None:
    pid = stack.listener_pid(stack.port(PROCESS_PORTS[process]))
    addresses = {
        conn.laddr.ip
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }
    assert addresses
    assert all(ipaddress.ip_address(ip).is_loopback for ip in addresses), addresses
