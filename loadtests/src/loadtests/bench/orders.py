"""Orders: a flash sale and sustained buying on one hot product, ours against the naive baseline.

``python -m loadtests.bench.orders`` starts two real orders API processes on free loopback ports, each
with its own fresh MariaDB database and RabbitMQ names (dropped/deleted afterwards):

* **ours** (``python -m orders``): concurrent orders are coalesced into shared
  transactions (``orders.batching``): one non-locking read prices a batch and turns away what it
  shows sold out, then one server-side call writes each order's own row, items and outbox event,
  locks the batch's product rows, takes each order's stock with a conditional ``UPDATE … WHERE
  stock >= q`` (undoing only the orders that do not fit) and commits, so the hot row is never
  locked across a round trip and each order pays a small share of one transaction's overhead;
* **naive** (``python -m loadtests.bench.orders_naive``): ``SELECT … FOR UPDATE`` first, then the same
  writes, so the hot row stays locked for every round trip of the transaction.

Two scenarios, run A/B/A/B so drift in the machine hits both alike (median of the rounds):

* flash sale — ``--buyers`` distinct signed-in buyers (default 1,000) each send one order for one unit
  of a product with ``--stock`` units (default 100) at the same moment, over connections opened
  beforehand; reported: successes, 409s, the invariant (stock left + units sold = initial stock, stock
  never negative, read back through the API), orders/s (orders answered, sold or refused, over the
  time until every buyer had an answer), when the last unit sold, p99;
* sustained — ``wrk`` keeps ``--concurrency`` connections ordering one unit each from a product with
  ample stock for ``--duration`` seconds; reported: orders/s and p50/p99 latency.

Both servers run on uvloop with asyncio debug mode off. Bounded: a fixed number of buyers per sale, a
fixed duration per sustained run, a deadline on each round. Prints a markdown table on stdout,
progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from asynccore.auth import issue_token
from asynccore.pools.mysql import drop_database
from asynccore.testing import ServiceProcess, free_port, server_url
from loadtests.bench.harness import local_url, log, median, start_server, table
from loadtests.bench.wrk import request_script, run_wrk
from orders.messaging import Names, delete_topology

VARIANTS = {
    "conditional": "ours: batched orders, conditional UPDATE last, one CALL per batch",
    "locking": "naive: SELECT … FOR UPDATE first",
}
SERVERS = {"conditional": "orders", "locking": "loadtests.bench.orders_naive"}  # python -m <this>
TARGET_RATIO = 2.0
MYSQL_SERVER = os.environ.get("BENCH_MYSQL_SERVER") or server_url("MYSQL")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
JWT_SECRET = "bench-secret-of-at-least-thirty-two-bytes"
ADMIN = {"Authorization": "Bearer bench-admin-token-of-at-least-32-bytes"}
ROUND_DEADLINE_S = 300.0
WARMUP_S = 2
CONNECT_AT_ONCE = 100


@dataclass
class Api:
    """One variant: ``replicas`` API processes sharing one database, as behind nginx in the stack."""

    variant: str
    mysql_url: str
    amqp_prefix: str
    urls: list[str] = field(default_factory=list)
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.urls[0]


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

    @property
    def orders_per_s(self) -> float:
        """Orders handled (sold or refused) per second: how fast the rush is answered."""
        return (self.successes + self.conflicts + self.others) / self.seconds


@dataclass(frozen=True)
class Sustained:
    orders_per_s: float
    p50_ms: float
    p99_ms: float
    orders: int
    failures: int


def _p(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _buyer(n: int) -> dict[str, str]:
    token = issue_token(JWT_SECRET, f"bench-buyer-{n}", f"buyer{n}", 3600)
    return {"Authorization": f"Token {token}"}


async def start_api(variant: str, replicas: int) -> Api:
    run_id = uuid.uuid4().hex[:10]
    api = Api(variant, mysql_url=f"{MYSQL_SERVER}/orders_bench_{run_id}", amqp_prefix=f"bench{run_id}.")
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
            [sys.executable, "-m", SERVERS[variant]],
            env={**env, "ORDERS_PORT": str(port)},
            health_url=f"{local_url(port)}/readyz",
            name=f"orders-{variant}-{replica}",
        )
        api.processes.append(process)
        api.urls.append(local_url(port))
    return api


async def stop_api(api: Api) -> None:
    for process in api.processes:
        await process.stop(timeout=10)
    await drop_database(api.mysql_url)
    await delete_topology(AMQP_URL, Names.with_prefix(api.amqp_prefix))


async def create_product(session: aiohttp.ClientSession, api: Api, stock: int) -> int:
    body = {"sku": uuid.uuid4().hex[:16], "name": "hot product", "price_cents": 1999, "stock": stock}
    async with session.post(f"{api.url}/api/products", json=body, headers=ADMIN) as resp:
        if resp.status != 201:
            raise RuntimeError(
                f"{api.variant}: creating a product answered {resp.status}: {await resp.text()}"
            )
        return int((await resp.json())["id"])


async def stock_of(session: aiohttp.ClientSession, api: Api, product: int) -> int:
    async with session.get(f"{api.url}/api/products/{product}") as resp:
        return int((await resp.json())["stock"])


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
    async def connect(cls, url: str, product: int, headers: dict[str, str]) -> Buyer:
        host, port = url.removeprefix("http://").split(":")
        body = orjson.dumps({"items": [{"product_id": product, "quantity": 1}]})
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (
            f"POST /api/orders HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n"
        ).encode() + body
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, request)

    async def buy(self) -> tuple[int, float, float]:
        """(status, latency, when it was answered)."""
        started = time.perf_counter()
        self.writer.write(self.request)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        done = time.perf_counter()
        return status, done - started, done

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def flash_sale(
    session: aiohttp.ClientSession, api: Api, buyers: list[dict[str, str]], stock: int
) -> Flash:
    product = await create_product(session, api, stock)
    # Connect first, a bounded number at a time: the sale measures orders, not TCP handshakes queueing
    # in the server's listen backlog.
    connect = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def connected(n: int, headers: dict[str, str]) -> Buyer:
        async with connect:
            return await Buyer.connect(api.urls[n % len(api.urls)], product, headers)

    ready = await asyncio.gather(*(connected(n, headers) for n, headers in enumerate(buyers)))
    try:
        began = time.perf_counter()
        results = await asyncio.gather(*(buyer.buy() for buyer in ready))
        seconds = time.perf_counter() - began
    finally:
        await asyncio.gather(*(buyer.close() for buyer in ready))
    statuses = [status for status, _, _ in results]
    successes, conflicts = statuses.count(201), statuses.count(409)
    sold_out = max((done for status, _, done in results if status == 201), default=began + seconds)
    left = await stock_of(session, api, product)
    return Flash(
        successes=successes,
        conflicts=conflicts,
        others=len(statuses) - successes - conflicts,
        sell_out_s=sold_out - began,
        seconds=seconds,
        p99_ms=_p([latency for _, latency, _ in results], 0.99),
        stock_left=left,
        invariant=left >= 0 and left + successes == stock,
    )


async def sustained(
    session: aiohttp.ClientSession, api: Api, args: argparse.Namespace, seconds: int
) -> Sustained:
    """wrk (C, so the load generator is not what we measure) against every replica at once, each with
    its share of ``--concurrency`` connections, for ``seconds``: one buyer ordering one unit at a time."""
    product = await create_product(session, api, stock=100_000_000)
    body = orjson.dumps({"items": [{"product_id": product, "quantity": 1}]}).decode()
    headers = {**_buyer(0), "Content-Type": "application/json"}
    lua = request_script("POST", body, headers)
    per_replica = max(1, args.concurrency // len(api.urls))
    runs = await asyncio.gather(
        *(
            run_wrk(f"{url}/api/orders", connections=per_replica, duration_s=seconds, threads=1, lua=lua)
            for url in api.urls
        )
    )
    return Sustained(
        orders_per_s=sum(run.requests_per_s for run in runs),
        p50_ms=max(run.p50_ms for run in runs),
        p99_ms=max(run.p99_ms for run in runs),
        orders=sum(run.requests for run in runs),
        failures=sum(run.errors for run in runs),
    )


async def bounded(label: str, work: Callable[[], Awaitable[Any]]) -> Any:
    async with asyncio.timeout(ROUND_DEADLINE_S):
        result = await work()
    log(f"{label}: {result}")
    return result


def _flash_rows(flash: dict[str, list[Flash]]) -> list[str]:
    headers = ["variant", "orders/s", "all answered at s", "sold out at s", "p99 ms", "sold", "409s"]
    headers += ["other", "stock"]
    rows = [
        [
            label,
            f"{median(r.orders_per_s for r in runs):.0f}",
            f"{median(r.seconds for r in runs):.3f}",
            f"{median(r.sell_out_s for r in runs):.3f}",
            f"{median(r.p99_ms for r in runs):.1f}",
            "/".join(str(r.successes) for r in runs),
            "/".join(str(r.conflicts) for r in runs),
            sum(r.others for r in runs),
            "holds" if all(r.invariant for r in runs) else "**BROKEN**",
        ]
        for variant, label in VARIANTS.items()
        if (runs := flash[variant])
    ]
    return table(headers, rows, align="lrrrrrrrl")


def _sustained_rows(steady: dict[str, list[Sustained]]) -> list[str]:
    rows = [
        [
            label,
            f"{median(r.orders_per_s for r in runs):.0f}",
            f"{median(r.p50_ms for r in runs):.1f}",
            f"{median(r.p99_ms for r in runs):.1f}",
            ", ".join(f"{r.orders_per_s:.0f}" for r in runs),
            sum(r.failures for r in runs),
        ]
        for variant, label in VARIANTS.items()
        if (runs := steady[variant])
    ]
    return table(
        ["variant", "orders/s", "p50 ms", "p99 ms", "orders/s per round", "errors"], rows, align="lrrrlr"
    )


def _ratio(results: dict[str, list[Flash]] | dict[str, list[Sustained]]) -> float:
    ours = median(r.orders_per_s for r in results["conditional"])
    return ours / median(r.orders_per_s for r in results["locking"])


def report(
    flash: dict[str, list[Flash]], steady: dict[str, list[Sustained]], args: argparse.Namespace
) -> str:
    lines = [
        f"One hot product, {args.rounds} rounds A/B, median per variant; {args.replicas} API processes per "
        f"variant (uvloop, asyncio debug off, DB pool 20 each), MariaDB and RabbitMQ on loopback; "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs.",
        "",
        f"**Flash sale**: {args.buyers} concurrent buyers, one unit each, stock {args.stock}; "
        "orders/s = orders answered (sold or 409) / time until every buyer had an answer.",
        "",
        *_flash_rows(flash),
        "",
        f"**Sustained**: `wrk` with {args.concurrency} connections for {args.duration} s per round, one "
        "unit per order, stock never runs out.",
        "",
        *_sustained_rows(steady),
        "",
    ]
    for name, value in (("flash sale", _ratio(flash)), ("sustained", _ratio(steady))):
        verdict = "meets" if value >= TARGET_RATIO else "MISSES"
        lines.append(
            f"- {name}: ours/naive orders/s **{value:.2f}x** ({verdict} the >= {TARGET_RATIO:g}x target)"
        )
    oversold = any(not r.invariant for runs in flash.values() for r in runs)
    lines.append(
        f"- oversell: {'**YES**' if oversold else '0'} (units sold + stock left = initial stock, each round)"
    )
    return "\n".join(lines)


async def bench(args: argparse.Namespace) -> str:
    apis: dict[str, Api] = {}
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=120)
    try:
        for variant in VARIANTS:
            apis[variant] = await start_api(variant, args.replicas)
        flash_buyers = [_buyer(n) for n in range(args.buyers)]
        flash: dict[str, list[Flash]] = {variant: [] for variant in VARIANTS}
        steady: dict[str, list[Sustained]] = {variant: [] for variant in VARIANTS}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for api in apis.values():  # warm up: pool connections, code paths, caches
                await sustained(session, api, args, WARMUP_S)
            for round_no in range(1, args.rounds + 1):
                for variant, api in apis.items():
                    flash[variant].append(
                        await bounded(
                            f"round {round_no} flash {variant}",
                            lambda api=api: flash_sale(session, api, flash_buyers, args.stock),  # type: ignore[misc]
                        )
                    )
                for variant, api in apis.items():
                    steady[variant].append(
                        await bounded(
                            f"round {round_no} sustained {variant}",
                            lambda api=api: sustained(session, api, args, args.duration),  # type: ignore[misc]
                        )
                    )
        return report(flash, steady, args)
    finally:
        for api in apis.values():
            await stop_api(api)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--buyers", type=int, default=1000, help="flash-sale buyers (default 1000)")
    parser.add_argument("--stock", type=int, default=100, help="flash-sale stock (default 100)")
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds of sustained load per round (default 10)"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="sustained connections (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("--replicas", type=int, default=2, help="API processes per variant (default 2)")
    parser.add_argument("--quick", action="store_true", help="one round, 4 s of sustained load")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, min(args.duration, 4)
    print(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
