"""Orders as clients send them: ours, with and without idempotency keys, against the article's handler.

``python -m loadtests.bench.orders`` starts, on free loopback ports, each with its own fresh MariaDB
database (and RabbitMQ names for ours; all dropped/deleted afterwards):

* **ours** at 1 and at 2 API processes (``python -m orders``, the processes of one deployment sharing
  its database, as behind nginx): concurrent orders coalesced into one ``CALL`` per batch
  (``orders.batching``); every order signed in (JWT) and, as clients send them, with a unique
  ``Idempotency-Key``; the same deployments without the key are a row for context;
* **article** (``python -m loadtests.bench.orders_article``): the classic blog post's ``create_order``
  in one aiohttp process, aiomysql pool 5-20, ``SELECT … FOR UPDATE``, ``UPDATE``, ``INSERT``,
  ``COMMIT``, then an untracked fulfilment task: the baseline. It gets the same headers and ignores them.

Two workloads, the variants interleaved round by round (the order reversed every second round) so
drift in a shared machine hits them alike; every ratio is a median of per-round ratios to the article:

* flash sale — ``--buyers`` distinct buyers (default 1,000) each send one order for one unit of a
  product with ``--stock`` units (default 100) at the same moment, over connections opened beforehand;
  orders/s = orders answered (sold or 409) / time until every buyer had an answer; p99 of those answers;
  oversell checked in the database (stock left + units sold = initial stock, stock never negative);
* sustained — ``wrk`` keeps ``--concurrency`` connections ordering one unit each (64 buyers' tokens in
  turn, a fresh key on every request) from a product with ample stock for ``--duration`` seconds.

For every run: CPU per order of the service process(es) and of ``mariadbd`` (``/proc/<pid>/stat``
utime + stime over the run and until the outbox is relayed), MariaDB's ``SHOW GLOBAL STATUS`` counters
per order (global: other clients of the same server add to them), and for keyed runs a sample of keys
replayed afterwards, each of which must return the order it made (same id; a key that made no order
still makes none). The issue's targets are stated at the end, each marked met or not.

Bounded: a fixed number of buyers per sale, a fixed duration per sustained run, a deadline on each run.
Prints markdown on stdout (``bench.report`` puts it under "## Orders"), progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from itertools import product as every
from operator import itemgetter
from pathlib import Path
from typing import Any

import aiohttp
import aiomysql
import orjson

from asynccore.auth import issue_token
from asynccore.pools.mysql import drop_database, parse_mysql_url
from asynccore.testing import ServiceProcess, free_port, server_url
from loadtests.bench.harness import cpu_seconds, interleaved, local_url, log, median, start_server, table
from loadtests.bench.orders_article import create_schema
from loadtests.bench.wrk import run_wrk
from orders.messaging import Names, delete_topology

MYSQL_SERVER = os.environ.get("BENCH_MYSQL_SERVER") or server_url("MYSQL")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
JWT_SECRET = "bench-secret-of-at-least-thirty-two-bytes"
ADMIN = {"Authorization": "Bearer bench-admin-token-of-at-least-32-bytes"}
ROUND_DEADLINE_S = 300.0
WARMUP_S = 2
CONNECT_AT_ONCE = 100
SUSTAINED_BUYERS = 64  # distinct signed-in users wrk sends orders as, in turn
RELAY_WAIT_S = 5.0  # CPU is read once the run's outbox rows are relayed, or after this long
TARGET_RATIO = 3.0
# SHOW GLOBAL STATUS counters reported per order (sustained runs).
COUNTERS = [
    "Questions",
    "Com_select",
    "Com_insert",
    "Com_update",
    "Com_call_procedure",
    "Com_commit",
    "Handler_commit",
    "Handler_write",
    "Handler_update",
    "Handler_read_key",
    "Handler_read_next",
    "Innodb_row_lock_waits",
    "Innodb_row_lock_time",
]


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    deployment: str  # key of DEPLOYMENTS
    keyed: bool  # a unique Idempotency-Key on every order


DEPLOYMENTS = {"ours1": ("ours", 1), "ours2": ("ours", 2), "article": ("article", 1)}
VARIANTS = [
    Variant("key1", "ours, JWT + Idempotency-Key, 1 process", "ours1", keyed=True),
    Variant("key2", "ours, JWT + Idempotency-Key, 2 processes", "ours2", keyed=True),
    Variant("nokey1", "ours, JWT, no key, 1 process (context)", "ours1", keyed=False),
    Variant("nokey2", "ours, JWT, no key, 2 processes (context)", "ours2", keyed=False),
    Variant("article", "article: create_order, 1 process (baseline)", "article", keyed=True),
]
KEYED = ("key1", "key2")
BASELINE = "article"


@dataclass
class Api:
    """One deployment: its processes (sharing one database) and how to talk to them."""

    kind: str  # "ours" or "article"
    mysql_url: str
    amqp_prefix: str = ""
    urls: list[str] = field(default_factory=list)
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def order_path(self) -> str:
        return "/api/orders" if self.kind == "ours" else "/orders"

    def body(self, product: int, buyer: int) -> bytes:
        if self.kind == "ours":
            return orjson.dumps({"items": [{"product_id": product, "quantity": 1}]})
        return orjson.dumps({"user_id": buyer, "product_id": product, "quantity": 1})

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes if process.pid is not None]


@dataclass(frozen=True)
class Cost:
    """What a run cost, from /proc and MariaDB's global counters."""

    service_cpu_s: float
    db_cpu_s: float
    status: dict[str, int]

    def per_order_us(self, orders: int) -> tuple[float, float]:
        n = max(orders, 1)
        return 1e6 * self.service_cpu_s / n, 1e6 * self.db_cpu_s / n


@dataclass(frozen=True)
class Replays:
    checked: int = 0
    wrong: int = 0
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.checked - self.wrong}/{self.checked} right" + (
            f" ({self.detail})" if self.wrong else ""
        )


@dataclass(frozen=True)
class Flash:
    successes: int
    conflicts: int
    others: int
    sell_out_s: float  # start → the last successful order's answer
    seconds: float  # start → every buyer answered
    p99_ms: float
    stock_left: int
    invariant: bool
    cost: Cost
    replays: Replays
    other_statuses: str = ""  # "503 x1": what the "others" were answered

    @property
    def answered(self) -> int:
        return self.successes + self.conflicts + self.others

    @property
    def orders_per_s(self) -> float:
        """Orders handled (sold or refused) per second: how fast the rush is answered."""
        return self.answered / self.seconds

    def __str__(self) -> str:
        svc, db = self.cost.per_order_us(self.answered)
        return (
            f"{self.orders_per_s:.0f} orders/s, p99 {self.p99_ms:.1f} ms, sold {self.successes}, "
            f"409 {self.conflicts}, other {self.others} {self.other_statuses}, invariant {self.invariant}, "
            f"CPU/order {svc:.0f}+{db:.0f} us, replays {self.replays}"
        )


@dataclass(frozen=True)
class Sustained:
    orders_per_s: float
    p50_ms: float
    p99_ms: float
    orders: int
    failures: int
    invariant: bool
    cost: Cost
    replays: Replays
    failure_kinds: str = ""  # "3 non-2xx, 19 timeouts"

    def __str__(self) -> str:
        svc, db = self.cost.per_order_us(self.orders)
        return (
            f"{self.orders_per_s:.0f} orders/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"errors {self.failures} {self.failure_kinds}, invariant {self.invariant}, "
            f"CPU/order {svc:.0f}+{db:.0f} us, replays {self.replays}"
        )


def _p(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _buyer(n: int) -> dict[str, str]:
    token = issue_token(JWT_SECRET, f"bench-buyer-{n}", f"buyer{n}", 3600)
    return {"Authorization": f"Token {token}"}


# ---------------------------------------------------------------------------- the database


async def query(url: str, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Rows of one statement on a connection of its own (autocommit: every read sees the latest)."""
    rows, _ = await _execute(url, sql, args)
    return rows


async def insert(url: str, sql: str, args: Sequence[object] = ()) -> int:
    """The id the server gave the row ``sql`` inserted."""
    _, row_id = await _execute(url, sql, args)
    return row_id


async def _execute(url: str, sql: str, args: Sequence[object]) -> tuple[list[tuple[Any, ...]], int]:
    target = parse_mysql_url(url)
    async with asyncio.timeout(30):
        conn = await aiomysql.connect(
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password,
            db=target.database,
            autocommit=True,
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql, args)
                return list(await cur.fetchall()), int(cur.lastrowid or 0)
        finally:
            await conn.ensure_closed()  # QUIT first: the server logs a plain close as an aborted one


async def global_status() -> dict[str, int]:
    rows = await query(f"{MYSQL_SERVER}/information_schema", "SHOW GLOBAL STATUS")
    return {name: int(value) for name, value in rows if str(value).isdigit()}


async def mariadbd_pid() -> int | None:
    """The pid of the MariaDB server the bench uses, from its ``@@pid_file`` (``None`` when that is
    not a process of this machine: its CPU is then not counted). Other MariaDB servers may run here
    (test suites start their own), so the process is never guessed by name."""
    if parse_mysql_url(f"{MYSQL_SERVER}/information_schema").host not in ("127.0.0.1", "localhost"):
        return None
    ((path,),) = await query(f"{MYSQL_SERVER}/information_schema", "SELECT @@pid_file")
    return _server_pid(Path(path))


def _server_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if name in ("mariadbd", "mysqld") else None


async def stock_and_sold(api: Api, product: int) -> tuple[int, int]:
    """(stock now, units in orders that hold stock), read in one statement (one snapshot: orders the
    server still finishes after the load stopped cannot fall between the two)."""
    if api.kind == "ours":
        sql = (
            "SELECT p.stock, (SELECT COALESCE(SUM(i.quantity), 0) FROM order_items i JOIN orders o "
            "ON o.id = i.order_id WHERE i.product_id = p.id AND o.status <> 'cancelled') "
            "FROM products p WHERE p.id = %s"
        )
    else:
        sql = (
            "SELECT p.stock, (SELECT COALESCE(SUM(o.quantity), 0) FROM orders o WHERE o.product_id = p.id) "
            "FROM products p WHERE p.id = %s"
        )
    ((stock, sold),) = await query(api.mysql_url, sql, (product,))
    return int(stock), int(sold)


async def relayed(api: Api) -> None:
    """Wait (bounded) until ours has published every outbox row, so its CPU for them is counted."""
    if api.kind != "ours":
        return
    deadline = time.monotonic() + RELAY_WAIT_S
    while time.monotonic() < deadline:
        ((unsent,),) = await query(api.mysql_url, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
        if unsent == 0:
            return
        await asyncio.sleep(0.05)


def _cpu_or_nan(pid: int | None) -> float:
    """``pid``'s CPU seconds; NaN when there is no such process (any more)."""
    if pid is None:
        return math.nan
    try:
        return cpu_seconds(pid)
    except OSError:
        return math.nan


async def measured(api: Api, work: Callable[[], Awaitable[Any]]) -> tuple[Any, Cost]:
    """``work()``'s result and its cost: CPU of ``api``'s processes and mariadbd, status deltas."""
    db = await mariadbd_pid()
    status = await global_status()
    pids = api.pids()
    service = sum(cpu_seconds(pid) for pid in pids)
    db_cpu = _cpu_or_nan(db)
    result = await work()
    await relayed(api)
    service = sum(cpu_seconds(pid) for pid in pids) - service
    db_cpu = _cpu_or_nan(db) - db_cpu  # NaN: the server restarted during the run (not counted)
    if math.isnan(db_cpu):
        log("mariadbd restarted during this run: its CPU is not counted")
    after = await global_status()
    delta = {name: after[name] - status.get(name, 0) for name in COUNTERS if name in after}
    return result, Cost(service, db_cpu, delta)


# ---------------------------------------------------------------------------- deployments


async def start_api(deployment: str, run_id: str) -> Api:
    kind, replicas = DEPLOYMENTS[deployment]
    db = f"{MYSQL_SERVER}/orders_bench_{run_id}_{deployment}"
    if kind == "article":
        api = Api(kind, mysql_url=db)
        await create_schema(db, stock=0)  # product 1: the health check reads it
        port = free_port()
        api.processes.append(
            await start_server(
                [sys.executable, "-m", "loadtests.bench.orders_article"],
                env={"MYSQL_URL": db, "ARTICLE_PORT": str(port)},
                health_url=f"{local_url(port)}/products/1",
                name="orders-article",
            )
        )
        api.urls.append(local_url(port))
        return api
    api = Api(kind, mysql_url=db, amqp_prefix=f"bench{run_id}{deployment}.")
    env = {
        "MYSQL_URL": api.mysql_url,
        "AMQP_URL": AMQP_URL,
        "AMQP_PREFIX": api.amqp_prefix,
        "JWT_SECRET": JWT_SECRET,
        "ORDERS_ADMIN_TOKEN": ADMIN["Authorization"].removeprefix("Bearer "),
        "REQUEST_TIMEOUT_S": "60",
    }
    for replica in range(replicas):  # one after the other: the first creates and migrates the database
        port = free_port()
        process = await start_server(
            [sys.executable, "-m", "orders"],
            env={**env, "ORDERS_PORT": str(port)},
            health_url=f"{local_url(port)}/readyz",
            name=f"orders-{deployment}-{replica}",
        )
        api.processes.append(process)
        api.urls.append(local_url(port))
    return api


async def stop_api(api: Api) -> None:
    for process in api.processes:
        with contextlib.suppress(Exception):
            await process.stop(timeout=10)
    await drop_database(api.mysql_url)
    if api.kind == "ours":
        await delete_topology(AMQP_URL, Names.with_prefix(api.amqp_prefix))


async def create_product(session: aiohttp.ClientSession, api: Api, stock: int) -> int:
    if api.kind == "article":
        return await insert(
            api.mysql_url,
            "INSERT INTO products (name, price, stock) VALUES ('hot product', 19.99, %s)",
            (stock,),
        )
    body = {"sku": uuid.uuid4().hex[:16], "name": "hot product", "price_cents": 1999, "stock": stock}
    async with session.post(f"{api.url}/api/products", json=body, headers=ADMIN) as resp:
        if resp.status != 201:
            raise RuntimeError(f"creating a product answered {resp.status}: {await resp.text()}")
        return int((await resp.json())["id"])


# ---------------------------------------------------------------------------- the flash sale


class Buyer:
    """One buyer's keep-alive HTTP/1.1 connection, its order request serialized in advance.

    The sale then costs the load generator one write and one short read per buyer, so what we time
    is the server (an aiohttp client spends longer building 1,000 requests than the sale takes).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
        self.reader = reader
        self.writer = writer
        self.request = request

    @classmethod
    async def connect(cls, url: str, path: str, body: bytes, headers: dict[str, str]) -> Buyer:
        host, port = url.removeprefix("http://").split(":")
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n"
        ).encode() + body
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, request)

    async def buy(self) -> tuple[int, float, float, bytes]:
        """(status, latency, when it was answered, body)."""
        started = time.perf_counter()
        self.writer.write(self.request)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        done = time.perf_counter()
        return status, done - started, done, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass(frozen=True)
class Sent:
    """One order a buyer sent, to replay: its headers, body and what it was first answered."""

    headers: dict[str, str]
    body: bytes
    status: int
    order_id: int | None


async def replay(session: aiohttp.ClientSession, api: Api, sent: Sequence[Sent]) -> Replays:
    """Send each order again with its key: a 201 must come back with the same order (and say it is a
    replay), a key that made no order must still make none."""
    wrong: list[str] = []
    for n, one in enumerate(sent):
        url = f"{api.urls[n % len(api.urls)]}{api.order_path}"
        headers = {**one.headers, "Content-Type": "application/json"}
        async with session.post(url, data=one.body, headers=headers) as resp:
            body = await resp.read()
            replayed = resp.headers.get("Idempotent-Replayed") == "true"
            if one.order_id is not None:
                got = orjson.loads(body).get("id") if resp.status == 201 else None
                if got != one.order_id or not replayed:
                    wrong.append(
                        f"{one.headers['Idempotency-Key']}: {resp.status} id {got}, was {one.order_id}"
                    )
            elif resp.status != one.status:
                wrong.append(f"{one.headers['Idempotency-Key']}: {resp.status}, was {one.status}")
    return Replays(len(sent), len(wrong), "; ".join(wrong[:3]))


def _order_id(status: int, body: bytes) -> int | None:
    return int(orjson.loads(body)["id"]) if status == 201 else None


async def flash_sale(
    session: aiohttp.ClientSession, api: Api, variant: Variant, args: argparse.Namespace, tag: str
) -> Flash:
    product = await create_product(session, api, args.stock)
    headers = [
        {**_buyer(n), **({"Idempotency-Key": f"{tag}-{n}"} if variant.keyed else {})}
        for n in range(args.buyers)
    ]
    # Connect first, a bounded number at a time: the sale measures orders, not TCP handshakes queueing
    # in the server's listen backlog.
    connect = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def connected(n: int) -> Buyer:
        async with connect:
            return await Buyer.connect(
                api.urls[n % len(api.urls)], api.order_path, api.body(product, n), headers[n]
            )

    ready = await asyncio.gather(*(connected(n) for n in range(args.buyers)))

    async def sale() -> tuple[float, float, list[tuple[int, float, float, bytes]]]:
        began = time.perf_counter()
        results = await asyncio.gather(*(buyer.buy() for buyer in ready))
        return began, time.perf_counter() - began, results

    try:
        (began, seconds, results), cost = await measured(api, sale)
    finally:
        await asyncio.gather(*(buyer.close() for buyer in ready))
    statuses = [status for status, _, _, _ in results]
    successes, conflicts = statuses.count(201), statuses.count(409)
    sold_out = max((done for status, _, done, _ in results if status == 201), default=began + seconds)
    left, sold = await stock_and_sold(api, product)
    replays = Replays()
    if variant.keyed and api.kind == "ours":
        sent = [
            Sent(headers[n], api.body(product, n), status, _order_id(status, body))
            for n, (status, _, _, body) in enumerate(results)
        ]
        winners = [one for one in sent if one.order_id is not None]
        losers = [one for one in sent if one.order_id is None]
        sample = random.sample(winners, min(args.replays, len(winners)))
        sample += random.sample(losers, min(args.replays // 2, len(losers)))
        replays = await replay(session, api, sample)
    return Flash(
        successes=successes,
        conflicts=conflicts,
        others=len(statuses) - successes - conflicts,
        other_statuses=", ".join(
            f"{status} x{count}" for status, count in Counter(statuses).items() if status not in (201, 409)
        ),
        sell_out_s=sold_out - began,
        seconds=seconds,
        p99_ms=_p([latency for _, latency, _, _ in results], 0.99),
        stock_left=left,
        invariant=left >= 0 and left + sold == args.stock and sold == successes,
        cost=cost,
        replays=replays,
    )


def median_sale(sales: Sequence[Flash]) -> Flash:
    """A round's flash sale: the one with the median orders/s (the lower middle of an even number),
    with what every sale must hold — no oversell, the replays right — checked over all of them."""
    ranked = sorted(sales, key=lambda sale: sale.orders_per_s)
    middle = ranked[(len(ranked) - 1) // 2]
    wrong = [sale.replays for sale in sales if sale.replays.wrong]
    elsewhere = [
        f"{sale.other_statuses} (another sale)" for sale in sales if sale.others and sale is not middle
    ]
    return replace(
        middle,
        other_statuses=", ".join(filter(None, [middle.other_statuses, *elsewhere])),
        invariant=all(sale.invariant for sale in sales),
        replays=Replays(
            checked=sum(sale.replays.checked for sale in sales),
            wrong=sum(r.wrong for r in wrong),
            detail="; ".join(r.detail for r in wrong),
        ),
    )


# ---------------------------------------------------------------------------- sustained


def lua_orders(body: bytes, tokens: Sequence[str], key_prefix: str | None) -> str:
    """A wrk script: POST ``body``, signed in as each of ``tokens`` in turn, with a fresh
    ``Idempotency-Key`` (``key_prefix`` + a counter) on every request when ``key_prefix`` is given."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {_lua(body.decode())}",
        'wrk.headers["Content-Type"] = "application/json"',
        f"local tokens = {{{', '.join(_lua(token) for token in tokens)}}}",
        "local n = 0",
        "request = function()",
        "  n = n + 1",
        '  wrk.headers["Authorization"] = tokens[(n % #tokens) + 1]',
    ]
    if key_prefix is not None:
        lines.append(f'  wrk.headers["Idempotency-Key"] = {_lua(key_prefix)} .. n')
    return "\n".join([*lines, "  return wrk.format()", "end"]) + "\n"


def _lua(text: str) -> str:
    """``text`` as a double-quoted Lua literal (printable ASCII as is, every other byte escaped)."""
    return (
        '"'
        + "".join(
            chr(byte) if 32 <= byte < 127 and byte not in (34, 92) else f"\\{byte:03d}"
            for byte in text.encode()
        )
        + '"'
    )


async def sustained(
    session: aiohttp.ClientSession,
    api: Api,
    variant: Variant,
    args: argparse.Namespace,
    seconds: int,
    tag: str,
) -> Sustained:
    """wrk (C, so the load generator is not what we measure) against every process at once, each with
    its share of ``--concurrency`` connections, for ``seconds``: buyers ordering one unit at a time."""
    stock = 100_000_000
    product = await create_product(session, api, stock=stock)
    body = api.body(product, 0)
    tokens = [_buyer(n)["Authorization"] for n in range(SUSTAINED_BUYERS)]
    per_process = max(1, args.concurrency // len(api.urls))

    async def load() -> list[Any]:
        return await asyncio.gather(
            *(
                run_wrk(
                    f"{url}{api.order_path}",
                    connections=per_process,
                    duration_s=seconds,
                    threads=1,
                    lua=lua_orders(body, tokens, f"{tag}-p{n}-" if variant.keyed else None),
                )
                for n, url in enumerate(api.urls)
            )
        )

    runs, cost = await measured(api, load)
    left, sold = await stock_and_sold(api, product)
    replays = Replays()
    if variant.keyed and api.kind == "ours":
        rows = await query(
            api.mysql_url,
            "SELECT o.id, o.user_id, o.idempotency_key FROM orders o JOIN order_items i ON i.order_id = o.id "
            "WHERE i.product_id = %s ORDER BY RAND() LIMIT %s",
            (product, args.replays),
        )
        sent = [
            Sent(
                {**_buyer(int(user.removeprefix("bench-buyer-"))), "Idempotency-Key": key},
                body,
                201,
                int(order_id),
            )
            for order_id, user, key in rows
        ]
        replays = await replay(session, api, sent)
    return Sustained(
        orders_per_s=sum(run.requests_per_s for run in runs),
        p50_ms=max(run.p50_ms for run in runs),
        p99_ms=max(run.p99_ms for run in runs),
        orders=sold,
        failures=sum(run.errors for run in runs),
        failure_kinds=_failure_kinds(runs),
        invariant=left >= 0 and left + sold == stock,
        cost=cost,
        replays=replays,
    )


def _failure_kinds(runs: Sequence[Any]) -> str:
    kinds = {
        "non-2xx": sum(run.http_errors for run in runs),
        "socket errors": sum(run.socket_errors for run in runs),
        "timeouts": sum(run.timeouts for run in runs),
    }
    return ", ".join(f"{count} {kind}" for kind, count in kinds.items() if count)


# ---------------------------------------------------------------------------- the report


def _ratios(results: dict[str, list[Any]], name: str) -> list[float]:
    """``name``'s orders/s over the article's, per round (none when the article did not run)."""
    if not results[BASELINE]:
        return []
    return [
        mine.orders_per_s / base.orders_per_s
        for mine, base in zip(results[name], results[BASELINE], strict=True)
    ]


def _cpu(runs: Sequence[Flash] | Sequence[Sustained], orders: Callable[[Any], int]) -> str:
    svc = median(run.cost.per_order_us(orders(run))[0] for run in runs)
    counted = [run.cost.per_order_us(orders(run))[1] for run in runs]
    counted = [value for value in counted if not math.isnan(value)]
    if not counted:
        return f"{svc:.0f} + n/a"
    db = median(counted)
    missing = (
        f" ({len(runs) - len(counted)} run(s) without mariadbd: it restarted)"
        if len(counted) < len(runs)
        else ""
    )
    return f"{svc:.0f} + {db:.0f} = {svc + db:.0f}{missing}"


def _per_round(values: Iterable[float], fmt: str = "{:.0f}") -> str:
    return ", ".join(fmt.format(value) for value in values)


def _others(runs: Sequence[Flash]) -> str:
    kinds = [f"{r.other_statuses} (round {n})" for n, r in enumerate(runs, 1) if r.others]
    return f"{sum(r.others for r in runs)}" + (f": {'; '.join(kinds)}" if kinds else "")


def _errors(runs: Sequence[Sustained]) -> str:
    kinds = [f"{r.failure_kinds} (round {n})" for n, r in enumerate(runs, 1) if r.failures]
    return f"{sum(r.failures for r in runs)}" + (f": {'; '.join(kinds)}" if kinds else "")


def _ratio_cell(ratios: Sequence[float]) -> str:
    return f"{median(ratios):.2f} ({_per_round(ratios, '{:.2f}')})" if ratios else "—"


def _replays(runs: Sequence[Flash] | Sequence[Sustained]) -> str:
    checked = sum(run.replays.checked for run in runs)
    wrong = sum(run.replays.wrong for run in runs)
    return "—" if not checked else f"{checked - wrong}/{checked}"


def _flash_rows(flash: dict[str, list[Flash]], variants: Sequence[Variant]) -> list[str]:
    headers = ["variant", "orders/s", "per round", "x article (median of rounds)", "all answered at s"]
    headers += ["p99 ms", "sold", "409s", "other", "stock", "CPU µs/order: service + mariadbd", "replays"]
    rows = [
        [
            v.label,
            f"{median(r.orders_per_s for r in runs):.0f}",
            _per_round(r.orders_per_s for r in runs),
            _ratio_cell(_ratios(flash, v.name)),
            f"{median(r.seconds for r in runs):.3f}",
            f"{median(r.p99_ms for r in runs):.1f}",
            "/".join(str(r.successes) for r in runs),
            "/".join(str(r.conflicts) for r in runs),
            _others(runs),
            "holds" if all(r.invariant for r in runs) else "**BROKEN**",
            _cpu(runs, lambda r: r.answered),
            _replays(runs),
        ]
        for v in variants
        if (runs := flash[v.name])
    ]
    return table(headers, rows, align="lrlrrrrrrlrr")


def _sustained_rows(steady: dict[str, list[Sustained]], variants: Sequence[Variant]) -> list[str]:
    headers = ["variant", "orders/s", "per round", "x article (median of rounds)", "p50 ms", "p99 ms"]
    headers += ["errors", "stock", "CPU µs/order: service + mariadbd", "replays"]
    rows = [
        [
            v.label,
            f"{median(r.orders_per_s for r in runs):.0f}",
            _per_round(r.orders_per_s for r in runs),
            _ratio_cell(_ratios(steady, v.name)),
            f"{median(r.p50_ms for r in runs):.1f}",
            f"{median(r.p99_ms for r in runs):.1f}",
            _errors(runs),
            "holds" if all(r.invariant for r in runs) else "**BROKEN**",
            _cpu(runs, lambda r: r.orders),
            _replays(runs),
        ]
        for v in variants
        if (runs := steady[v.name])
    ]
    return table(headers, rows, align="lrlrrrrlrr")


def _counter_rows(
    results: dict[str, list[Flash]] | dict[str, list[Sustained]],
    variants: Sequence[Variant],
    orders: Callable[[Any], int],
) -> list[str]:
    """MariaDB's global counters per order, median of the rounds."""
    shown = [name for name in COUNTERS if name != "Innodb_row_lock_time"]
    rows = []
    for v in variants:
        runs: Sequence[Flash | Sustained] = results[v.name]
        cells: list[object] = [v.label]
        cells += [f"{median(r.cost.status.get(n, 0) / max(orders(r), 1) for r in runs):.2f}" for n in shown]
        lock_ms = median(r.cost.status.get("Innodb_row_lock_time", 0) / max(orders(r), 1) for r in runs)
        rows.append([*cells, f"{lock_ms:.3f}"])
    return table(["variant", *shown, "Innodb_row_lock_time ms"], rows)


def _best(results: dict[str, list[Any]]) -> tuple[str, float]:
    """The keyed variant with the highest median ratio to the article, and that ratio."""
    return max(((name, median(_ratios(results, name))) for name in KEYED), key=lambda pair: pair[1])


def _mark(met: bool) -> str:
    return "**met**" if met else "**not met**"


def targets(flash: dict[str, list[Flash]], steady: dict[str, list[Sustained]]) -> list[str]:
    lines = ["Targets (issue 19), with keys, the best of 1 and 2 processes:", ""]
    labels = {v.name: v.label for v in VARIANTS}
    for workload, results in (("flash sale", flash), ("sustained", steady)):
        name, ratio = _best(results)
        lines.append(
            f"- {workload}: ≥ {TARGET_RATIO:g}x the article's orders/s — {ratio:.2f}x ({labels[name]}, "
            f"median of per-round ratios): {_mark(ratio >= TARGET_RATIO)}"
        )
        mine = median(r.p99_ms for r in results[name])
        base = median(r.p99_ms for r in results[BASELINE])
        lines.append(
            f"- {workload}: p99 under the article's — {mine:.1f} ms vs {base:.1f} ms: {_mark(mine < base)}"
        )
    broken = [
        f"{name} ({workload})"
        for workload, results in (("flash", flash), ("sustained", steady))
        for name, runs in results.items()
        if any(not r.invariant for r in runs)
    ]
    lines.append(
        f"- 0 oversell (stock left + units sold = initial stock, stock ≥ 0, every variant, every run): "
        f"{_mark(not broken)}{' — broken in ' + ', '.join(broken) if broken else ''}"
    )
    runs: list[Flash | Sustained] = [
        *(r for n in KEYED for r in flash[n]),
        *(r for n in KEYED for r in steady[n]),
    ]
    checked = sum(r.replays.checked for r in runs)
    wrong = [r.replays.detail for r in runs if r.replays.wrong]
    lines.append(
        f"- every replayed key returns the original order — {checked - sum(r.replays.wrong for r in runs)} "
        f"of {checked} sampled keys: {_mark(checked > 0 and not wrong)}"
        + (f" ({'; '.join(wrong)[:300]})" if wrong else "")
    )
    return lines


async def report(
    flash: dict[str, list[Flash]],
    steady: dict[str, list[Sustained]],
    args: argparse.Namespace,
    load: str,
) -> str:
    variants = [v for v in VARIANTS if flash[v.name]]
    db = "mariadbd on this machine" if await mariadbd_pid() else "the database server not counted (remote)"
    lines = [
        f"One hot product; {args.rounds} interleaved round(s) (the variants' order reversed every second "
        f"round); medians of the rounds, ratios to the article are medians of per-round ratios. Ours: "
        f"`python -m orders` (uvloop, asyncio debug off, batched placement), every order signed in with "
        f"a JWT and, unless marked, a unique `Idempotency-Key`; the article: its `create_order` "
        f"(`loadtests/bench/orders_article.py`: aiomysql pool 5-20, SELECT … FOR UPDATE, UPDATE, INSERT, "
        f"COMMIT, an untracked fulfilment task), one process, the same headers (ignored). Each deployment "
        f"has its own database on the same MariaDB; RabbitMQ on loopback; "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, shared "
        f"with whatever else ran (load average {load}). CPU per order: /proc utime+stime of the service "
        f"process(es) and of {db}, over the run until ours' outbox was relayed (mariadbd also serves "
        f"other clients: its share is an upper bound on a shared box).",
        "",
        f"**Flash sale**: {args.buyers} concurrent buyers, one unit each, stock {args.stock}; orders/s = "
        "orders answered (sold or 409) / time until every buyer had an answer; CPU per order answered. "
        f"Each round is the median of {args.sales} sales per variant (the variants taking turns, sale by "
        "sale; one sale takes 0.1-0.4 s); stock and replays are checked in every sale.",
        "",
        *_flash_rows(flash, variants),
        "",
        f"**Sustained**: `wrk` with {args.concurrency} connections (split over the processes) for "
        f"{args.duration} s per round, one unit per order from {SUSTAINED_BUYERS} buyers in turn, stock "
        "never runs out; CPU per order placed.",
        "",
        *_sustained_rows(steady, variants),
        "",
        "MariaDB's `SHOW GLOBAL STATUS` deltas (global counters: other clients of the server add to them), "
        "median of the rounds. Flash sale, per order answered:",
        "",
        *_counter_rows(flash, variants, lambda r: r.answered),
        "",
        "Sustained, per order placed:",
        "",
        *_counter_rows(steady, variants, lambda r: r.orders),
        "",
    ]
    if all(flash[name] for name in (*KEYED, BASELINE)):
        lines += targets(flash, steady)
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the run


async def bounded(label: str, work: Callable[[], Awaitable[Any]]) -> Any:
    async with asyncio.timeout(ROUND_DEADLINE_S):
        result = await work()
    log(f"{label}: {result}")
    return result


async def bench(args: argparse.Namespace) -> str:
    variants = [v for v in VARIANTS if v.name in args.variants]
    run_id = uuid.uuid4().hex[:8]
    apis: dict[str, Api] = {}
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=120)
    flash: dict[str, list[Flash]] = {v.name: [] for v in VARIANTS}
    steady: dict[str, list[Sustained]] = {v.name: [] for v in VARIANTS}
    try:
        for deployment in dict.fromkeys(v.deployment for v in variants):
            apis[deployment] = await start_api(deployment, run_id)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for v in variants:  # warm up: pool connections, code paths, caches
                await sustained(session, apis[v.deployment], v, args, WARMUP_S, f"{run_id}-{v.name}-warm")
            # The lambdas bind the loop's values as defaults, whose types mypy cannot infer ([misc]).
            for round_no, in_round in groupby(
                interleaved(args.rounds, variants, alternate=True), itemgetter(0)
            ):
                order = [v for _, v in in_round]
                # One sale answers in 0.15-0.4 s, where a scheduler hiccup moves it by ±40 %: a round
                # takes each variant's median of several, the variants taking turns sale by sale.
                sales: dict[str, list[Flash]] = {v.name: [] for v in order}
                for sale_no, v in every(range(1, args.sales + 1), order):
                    api, tag = apis[v.deployment], f"{run_id}-{v.name}-r{round_no}-f{sale_no}"
                    sales[v.name].append(
                        await bounded(
                            f"round {round_no} flash sale {sale_no} {v.name}",
                            lambda api=api, v=v, tag=tag: flash_sale(session, api, v, args, tag),  # type: ignore[misc]
                        )
                    )
                for v in order:
                    flash[v.name].append(median_sale(sales[v.name]))
                    log(f"round {round_no} flash {v.name} (median of {args.sales}): {flash[v.name][-1]}")
                for v in order:
                    api, tag = apis[v.deployment], f"{run_id}-{v.name}-r{round_no}"
                    steady[v.name].append(
                        await bounded(
                            f"round {round_no} sustained {v.name}",
                            lambda api=api, v=v, tag=tag: sustained(
                                session, api, v, args, args.duration, f"{tag}-s"
                            ),  # type: ignore[misc]
                        )
                    )
        load = " ".join(f"{value:.1f}" for value in os.getloadavg())
        return await report(flash, steady, args, load)
    finally:
        for api in apis.values():  # every one, even when stopping another failed (the server is gone)
            try:
                await stop_api(api)
            except Exception as exc:  # reported; the others are still stopped
                log(f"stopping {api.kind} at {api.urls}: {exc!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--buyers", type=int, default=1000, help="flash-sale buyers (default 1000)")
    parser.add_argument("--stock", type=int, default=100, help="flash-sale stock (default 100)")
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds of sustained load per round (default 10)"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="sustained connections (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--sales", type=int, default=5, help="flash sales per variant and round, its median kept (default 5)"
    )
    parser.add_argument("--replays", type=int, default=20, help="keys replayed per keyed run (default 20)")
    parser.add_argument(
        "--variants",
        type=lambda text: text.split(","),
        default=[v.name for v in VARIANTS],
        help=f"comma-separated subset of {','.join(v.name for v in VARIANTS)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="one round, 4 s of sustained load")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, min(args.duration, 4)
    unknown = set(args.variants) - {v.name for v in VARIANTS}
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    print(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
