"""Fixtures: every test owns a MariaDB database and RabbitMQ names (unique, removed afterwards), and
talks to real servers: the shared MariaDB/RabbitMQ and in-process payment sandbox and SMTP sink."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable

import aiomysql
import pytest
from aiohttp import web
from pydantic import SecretStr

from asynccore.auth import Caller, issue_token
from asynccore.migrations import apply_migrations
from asynccore.pools.mysql import close_mysql, drop_database, open_mysql
from asynccore.testing import free_port, server_url
from devservers import payment, smtp
from orders.batching import Placer
from orders.messaging import Names, delete_topology
from orders.models import NewOrder
from orders.placement import Placed
from orders.resources import MIGRATIONS
from orders.settings import OrdersSettings
from orders.sightings import Sightings

MYSQL_SERVER = server_url("MYSQL")
AMQP_URL = server_url("AMQP") + "/"
REDIS_URL = server_url("REDIS") + "/0"
JWT_SECRET = "orders-test-secret-of-at-least-32-bytes"
# Processes the tests start read it from the environment (services have no default secret).
os.environ.setdefault("JWT_SECRET", JWT_SECRET)
ADMIN_TOKEN = "orders-test-admin-token-of-at-least-32-bytes"
os.environ.setdefault("ORDERS_ADMIN_TOKEN", ADMIN_TOKEN)


Headers = dict[str, str]


@pytest.fixture
def amqp_url() -> str:
    return AMQP_URL


@pytest.fixture
def user() -> Callable[[str], Headers]:
    """``user("42")``: headers carrying a JWT for user 42 (signed with the tests' JWT_SECRET)."""

    def headers(user_id: str) -> Headers:
        return {"Authorization": f"Token {issue_token(JWT_SECRET, user_id, f'user{user_id}', 3600)}"}

    return headers


@pytest.fixture
def admin() -> Headers:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def mysql_url() -> AsyncIterator[str]:
    """A database owned by this test (created by whoever opens it first), dropped afterwards."""
    url = f"{MYSQL_SERVER}/orders_t_{uuid.uuid4().hex[:16]}"
    yield url
    await drop_database(url)


@pytest.fixture
async def pool(mysql_url: str) -> AsyncIterator[aiomysql.Pool]:
    pool = await open_mysql(mysql_url, maxsize=20)
    await apply_migrations(mysql_url, MIGRATIONS)
    yield pool
    await close_mysql(pool)


@pytest.fixture
async def amqp_prefix() -> AsyncIterator[str]:
    """Exchange and queue names owned by this test; deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}."
    yield prefix
    await delete_topology(AMQP_URL, Names.with_prefix(prefix))


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


class Sandbox:
    def __init__(self, url: str, state: payment.Sandbox) -> None:
        self.url = url
        self.state = state


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """The payment sandbox, a real HTTP server on a free port (in this process)."""
    port = free_port()
    app = payment.build_app(payment.SandboxSettings())
    runner = await _serve(app, port)
    yield Sandbox(f"http://127.0.0.1:{port}", app[payment.SANDBOX])
    await runner.cleanup()


class Sink:
    def __init__(self, smtp_port: int, http_url: str, mailbox: smtp.Mailbox) -> None:
        self.smtp_port = smtp_port
        self.http_url = http_url
        self.mailbox = mailbox


@pytest.fixture
async def smtp_sink() -> AsyncIterator[Sink]:
    """The SMTP sink: real SMTP and HTTP servers on free ports (in this process)."""
    smtp_port, http_port = free_port(), free_port()
    app = smtp.build_app(smtp.SinkSettings(smtp_port=smtp_port, smtp_sink_host="127.0.0.1"))
    runner = await _serve(app, http_port)
    yield Sink(smtp_port, f"http://127.0.0.1:{http_port}", app[smtp.MAILBOX])
    await runner.cleanup()


FAST = {
    "amqp_reconnect_s": 0.3,
    "amqp_timeout_s": 3.0,
    "payment_timeout_s": 2.0,
    "payment_backoff_s": 0.02,
    "breaker_reset_s": 0.5,
    "worker_retry_delay_s": 0.1,
    "outbox_interval_s": 0.05,
    "expiry_interval_s": 0.2,
    "shutdown_timeout_s": 5.0,
}


@pytest.fixture
def settings(mysql_url: str, amqp_prefix: str, sandbox: Sandbox, smtp_sink: Sink) -> OrdersSettings:
    return OrdersSettings(
        mysql_url=mysql_url,
        amqp_url=AMQP_URL,
        amqp_prefix=amqp_prefix,
        revocation_url=REDIS_URL,
        revocation_prefix=f"{amqp_prefix}auth:",  # the test's own: a revocation touches nobody else
        payment_url=sandbox.url,
        smtp_port=smtp_sink.smtp_port,
        jwt_secret=SecretStr(JWT_SECRET),
        orders_admin_token=SecretStr(ADMIN_TOKEN),
        log_json=False,
        **FAST,
    )


def env_of(settings: OrdersSettings, **more: object) -> dict[str, str]:
    """``settings`` as the environment of a service process (every field, so nothing comes from ours)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    env.update({name.upper(): str(value) for name, value in more.items()})
    return env


async def place_order(
    pool: aiomysql.Pool,
    caller: Caller,
    request: NewOrder,
    key: str | None,
    *,
    sightings: Sightings | None = None,
) -> Placed:
    """Place one order as the API's entry does, each order in its own transaction (no batching)."""
    return await Placer(pool, sightings or Sightings()).place_order(caller, request, key)
