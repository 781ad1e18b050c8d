"""Schemathesis against each service's own OpenAPI document: no 5xx, nothing the document does not allow.

Each service runs as a real process on a free port with dependencies of its own (a temporary SQLite
file and Redis prefix; a fresh MariaDB database and AMQP names; a private Apache Kafka broker whose
topics the service creates), so the fuzzer's writes touch nothing else. One schemathesis run per
service (the process is stopped before its report is read) feeds two tests: server errors, and
conformance to the documented schema (status codes, content types, bodies, headers).
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from fuzzing import Failure, FuzzReport, run_schemathesis
from redis.asyncio import Redis

from asynccore.auth import issue_token
from asynccore.pools.mysql import drop_database
from asynccore.testing import ServiceProcess, free_port, server_url
from devservers.kafka_broker import KafkaBroker
from orders.messaging import Names, delete_topology

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = server_url("REDIS") + "/0"
MYSQL_SERVER = server_url("MYSQL")
AMQP_URL = server_url("AMQP") + "/"
JWT_SECRET = f"fuzz-{uuid.uuid4().hex}{uuid.uuid4().hex}"
ADMIN_TOKEN = f"fuzz-admin-{uuid.uuid4().hex}"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
START_TIMEOUT_S = 40.0
FUZZ_TIMEOUT_S = 75.0  # per service; three of them keep the file under ~4 minutes

# The first test of a service also starts it and runs the fuzzer.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(FUZZ_TIMEOUT_S + 2 * START_TIMEOUT_S)]
module_fixture = pytest_asyncio.fixture(scope="module", loop_scope="module")


# ---------------------------------------------------------------------------- what the run must show


def assert_clean(report: FuzzReport, failures: list[Failure], what: str) -> None:
    assert not report.errors, report.describe([])
    assert report.requests, f"{report.name}: schemathesis sent no requests\n{report.output[-3000:]}"
    locked = report.locked_out()
    assert not locked, f"{report.name}: only 401/403 for {locked}: the fuzzer's credentials are wrong"
    assert not failures, f"{len(failures)} {what}:\n{report.describe(failures)}"


def server_errors(report: FuzzReport) -> list[Failure]:
    return report.of("not_a_server_error")


def nonconforming(report: FuzzReport) -> list[Failure]:
    """Responses outside the document; a 5xx is counted once, by :func:`server_errors`."""
    return [f for f in report.failures if f.check != "not_a_server_error" and (f.status or 0) < 500]


# ---------------------------------------------------------------------------- shared plumbing


def service(module: str, port: int, env: dict[str, str]) -> ServiceProcess:
    common = {"JWT_SECRET": JWT_SECRET, "LOG_LEVEL": "WARNING", "LOG_JSON": "false"}
    return ServiceProcess(
        [sys.executable, "-m", module],
        env={**common, **env},
        health_url=f"http://127.0.0.1:{port}/readyz",
        name=f"{module}-{port}",
    )


async def fuzz(proc: ServiceProcess, run: Awaitable[FuzzReport]) -> FuzzReport:
    """Await the fuzz run against a started ``proc``, then stop it; a crash under the fuzzer fails."""
    try:
        report = await run
        if not proc.running:
            pytest.fail(f"{proc.name} exited with {proc.returncode} while fuzzed:\n{proc.output[-4000:]}")
    finally:
        await proc.stop()
    print(report.summary())
    return report


async def post_json(url: str, body: object, headers: dict[str, str] | None = None) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http,
        http.post(url, json=body, headers=headers) as resp,
    ):
        assert resp.status in (200, 201), f"{url}: {resp.status} {await resp.text()}"
        result: dict[str, Any] = await resp.json()
        return result


async def get_json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http, http.get(url) as resp:
        assert resp.status == 200, f"{url}: {resp.status}"
        result: dict[str, Any] = await resp.json()
        return result


async def delete_redis_prefix(prefix: str) -> None:
    client = Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
    finally:
        await client.aclose()


# ---------------------------------------------------------------------------- blog


def realworld_allowances(spec: dict[str, Any]) -> dict[str, Any]:
    """The RealWorld spec plus the two things it leaves out of what the RealWorld API does.

    * 404 is missing everywhere, yet an unknown article, profile or comment is a 404 in the RealWorld
      API docs (and in every implementation): it is allowed on operations that address a resource by
      path, with the error body.
    * ``GenericErrorModel`` requires ``errors.body``, while the RealWorld docs key errors by field
      (``{"errors": {"email": ["has already been taken"]}}``), which is also this project's error
      contract: any key, each an array of strings.

    Nothing else is relaxed: success bodies, 401/422 and every other status are as documented.
    """
    patched = copy.deepcopy(spec)
    patched["components"]["schemas"]["GenericErrorModel"] = {
        "type": "object",
        "required": ["errors"],
        "properties": {
            "errors": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            }
        },
    }
    for path, operations in patched["paths"].items():
        if "{" in path:
            for operation in operations.values():
                operation["responses"].setdefault("404", {"$ref": "#/components/responses/GenericError"})
    return patched


BLOG_CONFIG = """
[auth.openapi.Token]
api_key = "Token ${FUZZ_JWT}"
"""


@module_fixture
async def blog_report(tmp_path_factory: pytest.TempPathFactory) -> FuzzReport:
    tmp = tmp_path_factory.mktemp("fuzz-blog")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prefix = f"fuzz-{uuid.uuid4().hex[:10]}"
    proc = service(
        "blog",
        port,
        {
            "BLOG_PORT": str(port),
            "BLOG_DB_PATH": str(tmp / "blog.db"),
            "BLOG_CACHE_PREFIX": prefix,
            "REDIS_URL": REDIS_URL,
            "BLOG_PUBLIC_URL": base,
            # Password hashing at production cost would spend the run's time on argon2.
            "BLOG_ARGON2_TIME_COST": "1",
            "BLOG_ARGON2_MEMORY_KIB": "1024",
            "BLOG_ARGON2_PARALLELISM": "1",
        },
    )
    try:
        await proc.start(timeout=START_TIMEOUT_S)
        # A real account, so signed-in operations act as a user that exists.
        user = {"username": "fuzzer", "email": "fuzzer@example.com", "password": "fuzz-password"}
        token = (await post_json(f"{base}/api/users", {"user": user}))["user"]["token"]
        spec = realworld_allowances(await get_json(f"{base}/api/openapi.json"))
        # A password change revokes every older token, the fuzzer's only one included: leave it out.
        spec["components"]["schemas"]["UpdateUser"]["properties"].pop("password")
        (tmp / "openapi.json").write_text(json.dumps(spec))
        run = run_schemathesis(
            "blog",
            str(tmp / "openapi.json"),
            f"{base}/api",  # the spec's paths are relative to its server's /api
            workdir=tmp / "schemathesis",
            config=BLOG_CONFIG,
            env={"FUZZ_JWT": token},
            timeout_s=FUZZ_TIMEOUT_S,
        )
        return await fuzz(proc, run)
    finally:
        await proc.stop()
        await delete_redis_prefix(f"{prefix}:")


def test_blog_never_answers_5xx(blog_report: FuzzReport) -> None:
    assert_clean(blog_report, server_errors(blog_report), "server errors")


def test_blog_answers_as_documented(blog_report: FuzzReport) -> None:
    assert_clean(blog_report, nonconforming(blog_report), "responses outside the RealWorld spec")


# ---------------------------------------------------------------------------- orders

# The document names two schemes: user operations take a JWT, admin ones the admin bearer token.
ORDERS_CONFIG = """
[auth.openapi.jwt]
api_key = "Token ${FUZZ_JWT}"

[auth.openapi.admin]
bearer = "${FUZZ_ADMIN}"
"""


@module_fixture
async def orders_report(tmp_path_factory: pytest.TempPathFactory) -> FuzzReport:
    tmp = tmp_path_factory.mktemp("fuzz-orders")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    mysql_url = f"{MYSQL_SERVER}/orders_fuzz_{uuid.uuid4().hex[:12]}"
    amqp_prefix = f"fuzz{uuid.uuid4().hex[:10]}."
    proc = service(
        "orders",
        port,
        {
            "ORDERS_PORT": str(port),
            "MYSQL_URL": mysql_url,
            "AMQP_URL": AMQP_URL,
            "AMQP_PREFIX": amqp_prefix,
            "ORDERS_ADMIN_TOKEN": ADMIN_TOKEN,
            "KAFKA_BOOTSTRAP": "",  # no relay to the stream: the API is what is fuzzed
        },
    )
    try:
        await proc.start(timeout=START_TIMEOUT_S)
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        # Products in stock, so some generated orders are placed rather than all refused.
        for i in range(3):
            product = {"sku": f"FUZZ-{i}", "name": f"fuzz {i}", "price_cents": 100 + i, "stock": 1000}
            await post_json(f"{base}/api/products", product, admin)
        run = run_schemathesis(
            "orders",
            f"{base}/api/orders/openapi.json",
            base,
            workdir=tmp / "schemathesis",
            config=ORDERS_CONFIG,
            env={
                "FUZZ_JWT": issue_token(JWT_SECRET, "fuzz-user", "fuzzer", 3600),
                "FUZZ_ADMIN": ADMIN_TOKEN,
            },
            timeout_s=FUZZ_TIMEOUT_S,
        )
        return await fuzz(proc, run)
    finally:
        await proc.stop()
        await drop_database(mysql_url)
        await delete_topology(AMQP_URL, Names.with_prefix(amqp_prefix))


def test_orders_never_answers_5xx(orders_report: FuzzReport) -> None:
    assert_clean(orders_report, server_errors(orders_report), "server errors")


def test_orders_answers_as_documented(orders_report: FuzzReport) -> None:
    assert_clean(orders_report, nonconforming(orders_report), "responses outside the orders document")


# ---------------------------------------------------------------------------- stream

STREAM_CONFIG = """
# /api/live is Server-Sent Events that never end: read one event and close.
max-stream-events = 1

# Producers post with the ingest token, users with their JWT, risk alerts take the admin token.
[auth.openapi.ingest]
bearer = "${FUZZ_INGEST}"

[auth.openapi.jwt]
api_key = "Token ${FUZZ_JWT}"

[auth.openapi.admin]
bearer = "${FUZZ_ADMIN}"
"""
STREAM_INGEST_TOKEN = f"fuzz-ingest-{uuid.uuid4().hex}{uuid.uuid4().hex}"
STREAM_ADMIN_TOKEN = f"fuzz-stream-admin-{uuid.uuid4().hex}{uuid.uuid4().hex}"


@module_fixture
async def stream_report(tmp_path_factory: pytest.TempPathFactory) -> FuzzReport:
    tmp = tmp_path_factory.mktemp("fuzz-stream")
    run_id = uuid.uuid4().hex[:10]
    topics = {
        "STREAM_TOPIC": f"events-{run_id}",
        "STREAM_DLQ_TOPIC": f"dlq-{run_id}",
        "STREAM_ALERTS_TOPIC": f"alerts-{run_id}",
    }
    kafka = await asyncio.to_thread(KafkaBroker)
    port = free_port()
    prefix = f"fuzz-stream:{run_id}:"
    try:
        proc = service(
            "stream",
            port,
            {
                **topics,
                "STREAM_PORT": str(port),
                "KAFKA_BOOTSTRAP": kafka.bootstrap,
                "STREAM_PARTITIONS": "4",
                "REDIS_URL": REDIS_URL,
                "STREAM_GROUP_ID": f"fuzz-{run_id}",
                "STREAM_REDIS_PREFIX": prefix,
                "STREAM_INGEST_TOKEN": STREAM_INGEST_TOKEN,
                "STREAM_ADMIN_TOKEN": STREAM_ADMIN_TOKEN,
                "SHUTDOWN_TIMEOUT_S": "5",
            },
        )
        await proc.start(timeout=START_TIMEOUT_S)
        run = run_schemathesis(
            "stream",
            f"http://127.0.0.1:{port}/api/analytics/openapi.json",
            f"http://127.0.0.1:{port}",
            workdir=tmp / "schemathesis",
            config=STREAM_CONFIG,
            env={
                "FUZZ_INGEST": STREAM_INGEST_TOKEN,
                "FUZZ_JWT": issue_token(JWT_SECRET, "fuzz-user", "fuzzer", 3600),
                "FUZZ_ADMIN": STREAM_ADMIN_TOKEN,
            },
            timeout_s=FUZZ_TIMEOUT_S,
        )
        return await fuzz(proc, run)
    finally:
        await asyncio.to_thread(kafka.close)
        await delete_redis_prefix(prefix)


def test_stream_never_answers_5xx(stream_report: FuzzReport) -> None:
    assert_clean(stream_report, server_errors(stream_report), "server errors")


def test_stream_answers_as_documented(stream_report: FuzzReport) -> None:
    assert_clean(stream_report, nonconforming(stream_report), "responses outside the stream document")
