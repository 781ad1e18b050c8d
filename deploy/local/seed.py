"""The local stack's demo data set, made through the public APIs behind nginx.

``deploy/local/run`` starts it in the background once every listener answers (``DEMO=0``: not at
all), so the home page, the product list, the analytics and every Prometheus graph show life within
a minute of ``make run``: four authors with articles, tags, comments, favourites and follows; a
product catalogue with stock; a few orders, paid by the fulfilment worker and some of them fulfilled.

    python deploy/local/seed.py --front http://127.0.0.1:8080 --run-dir /tmp/asyncstack \\
        [--services "blog orders orders-worker ..."] [--timeout 120] [--parent PID]

It prints one line when it is done, ``demo data: 12 articles by 4 authors, 20 comments, 12 products,
5 orders (2 fulfilled) in 6 s``, or, when an API refuses, ``demo data: FAILED: POST /api/articles
answered 422: {...}`` (exit 1): it doubles as a smoke test of the front door. Once a run dir holds it
(the marker ``demo-seeded``, written when the blog and orders were both there to seed) a later start
prints that line again and changes nothing. A seeding cut
short resumes: what exists is reused (authors by name, articles by title, comments by text, products
by SKU, orders by idempotency key). The authors' passwords are in ``demo-accounts.env`` (mode 600).
It stops quietly on SIGINT/SIGTERM and once the runner that started it (``--parent``) is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

MARKER = "demo-seeded"
ACCOUNTS = "demo-accounts.env"
REQUEST_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 60.0  # services listen before their dependencies answer (/readyz)
RETRYABLE = {429, 503}  # nginx's limits and a shedding bulkhead: the request was not processed

# --------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Author:
    username: str
    bio: str


@dataclass(frozen=True)
class Article:
    author: str
    title: str
    description: str
    body: str
    tags: tuple[str, ...]
    comments: tuple[tuple[str, str], ...] = ()  # (commenter, text)


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int
    stock: int


AUTHORS = (
    Author("mira", "Backend engineer. Writes about event loops and the things that block them."),
    Author("tomasz", "Runs the shop's databases; likes short transactions and long weekends."),
    Author("keiko", "Observability, dashboards, and why p99 is the number that matters."),
    Author("olu", "Builds the analytics pipeline; asks 'exactly once?' at every design review."),
)

ARTICLES = (
    Article(
        "mira",
        "Why our blog answers from memory",
        "A cache in two tiers, and why invalidation is one increment",
        "Most reads of this blog never reach SQLite. Each replica keeps ready-to-send bytes in "
        "process, Redis holds the shared copy, and a write bumps a *version* instead of deleting "
        "keys.\n\n## What a hit costs\n\nA few dict lookups, no I/O. A miss is loaded once per "
        "process and once across replicas.\n\n## When Redis goes away\n\nA circuit breaker answers "
        "for it and reads fall back to SQLite, counted but never an error.",
        ("caching", "redis", "python"),
        (
            ("keiko", "The fallback counter saved us during the last Redis upgrade."),
            ("olu", "Versioned keys are such a nice trick: nothing to scan, nothing to delete."),
        ),
    ),
    Article(
        "mira",
        "Every await has a bound",
        "Timeouts, bulkheads and the queue that must not grow forever",
        "An `await` on the network without a timeout is a promise to wait forever. We wrap every "
        "call in `asyncio.timeout`, give every pool a bounded wait queue, and shed load with a 503 "
        "rather than queueing.\n\n> A slow dependency should cost a request, not the process.",
        ("asyncio", "resilience", "python"),
        (("tomasz", "Same rule for lock waits in MariaDB: bounded, then retried."),),
    ),
    Article(
        "mira",
        "Finding the callback that blocked the loop",
        "Slow-callback warnings and the event-loop lag gauge",
        "When p99 jumps on every route at once, look at the event loop first. The lag gauge says "
        "*that* it is blocked; the slow-callback warning in the logs says *where*.\n\nMove the "
        "culprit to a thread, or make it async.",
        ("asyncio", "observability"),
        (
            ("keiko", "EventLoopLagHigh has a runbook line for exactly this."),
            ("olu", "Ours was a JSON dump of a 5 MB document. Moved to a thread, lag gone."),
        ),
    ),
    Article(
        "tomasz",
        "Selling the last mug exactly once",
        "Row locks in a fixed order, held for as short as possible",
        "A flash sale is a hot row. Stock changes only inside a transaction that holds the product's "
        "row lock, rows are locked in ascending id order, and concurrent orders share one commit.\n\n"
        "```sql\nUPDATE products SET stock = stock - 1 WHERE id = ? AND stock >= 1\n```\n\n"
        "An order that does not fit is undone alone and answered 409.",
        ("mariadb", "orders", "concurrency"),
        (
            ("mira", "Group commit for the hot row is the part I keep explaining to people."),
            ("keiko", "The 'Placing call time' panel shows it nicely under load."),
        ),
    ),
    Article(
        "tomasz",
        "The outbox: events that never get lost",
        "Writing the event in the same transaction as the change",
        "An order and its `order.created` event commit together, in one transaction. A relay "
        "publishes outbox rows to RabbitMQ with publisher confirms and marks them sent.\n\n"
        "If the broker is away, rows wait; the *Oldest unsent outbox event* panel shows how long.",
        ("orders", "rabbitmq", "reliability"),
        (("olu", "And the same rows feed Kafka for the analytics. One source of truth."),),
    ),
    Article(
        "tomasz",
        "Idempotency keys, compared exactly",
        "Why Key-AbC and key-abc are two different orders",
        "A client that retries a purchase sends the same `Idempotency-Key`, and gets the same "
        "order back (`Idempotent-Replayed: true`) instead of buying twice.\n\nKeys are compared "
        "byte for byte: a case-insensitive collation once replayed the wrong order.",
        ("orders", "api", "mariadb"),
        (
            ("mira", "Collations: the bug that hides in the schema."),
            ("keiko", "Retrying clients finally safe. Nice."),
        ),
    ),
    Article(
        "keiko",
        "Four dashboards, one question each",
        "Start at the overview and follow the red panel",
        "Overview: is the stack healthy, and which service is not? Blog: is the cache carrying the "
        "reads? Orders: are orders flowing from pending to fulfilled? Stream: is analytics keeping "
        "up with Kafka?\n\nEach service dashboard opens with the same RED row per route template.",
        ("observability", "grafana", "prometheus"),
        (
            ("tomasz", "The RabbitMQ queue depth panel is my favourite."),
            ("mira", "Recording rules keep them cheap, too."),
        ),
    ),
    Article(
        "keiko",
        "Burn rates instead of thresholds",
        "Multi-window alerts on a p99 latency objective",
        "Our objective: at most 1% of requests slower than 500 ms over 30 days. A fast burn pages "
        "when 1 h *and* 5 min both burn the budget 14.4 times too fast; a slow burn opens a "
        "ticket.\n\nA short spike does not page, and an alert clears soon after the burn stops.",
        ("observability", "slo", "prometheus"),
        (("olu", "Finally alerts I do not mute."),),
    ),
    Article(
        "keiko",
        "Reading a locust report",
        "What the percentiles say, and which SLO failed",
        "`make load SCENARIO=blog` runs a scenario headless, writes locust's CSV and HTML report, and "
        "exits non-zero when an SLO is missed.\n\nRead the *Response time percentiles* chart first, "
        "then the failures tab.",
        ("loadtesting", "locust", "slo"),
        (
            ("mira", "The smoke size runs in the tests, so the scenarios never rot."),
            ("tomasz", "flash_sale also checks that nothing was oversold."),
        ),
    ),
    Article(
        "olu",
        "Exactly once, with offsets in Redis",
        "Aggregates and consumed offsets in one transaction",
        "Every flush writes the aggregate deltas *and* the consumed offsets in one Redis "
        "transaction. A crash before `EXEC` re-reads the batch; after it, nothing is re-read.\n\n"
        "Kafka's committed offsets are never used.",
        ("kafka", "redis", "streaming"),
        (
            ("tomasz", "Same idea as the outbox, from the other side."),
            ("mira", "WATCH on the offset key fencing a stale member is neat."),
        ),
    ),
    Article(
        "olu",
        "Viewed this, also viewed",
        "Co-views in sessions, decayed hourly without rewriting a score",
        "A user's session is the last few products they viewed. A new product in the session "
        "pairs once with each one already there; pairs count per hour and a query sums the last "
        "hours weighted by `0.5 ** (age / half-life)`.",
        ("streaming", "recommendations"),
        (("keiko", "Hourly hashes that simply expire: no cleanup job."),),
    ),
    Article(
        "olu",
        "Late, malformed, duplicate",
        "Judging every event before it is counted",
        "Malformed events and events behind the partition's watermark go to a dead-letter topic; "
        "an id seen before is a duplicate. Watermarks are stored with the offsets, so a replay "
        "judges every event exactly as the first run did.",
        ("kafka", "streaming", "data-quality"),
        (
            ("mira", "The dead-letter reasons panel is the first place I look."),
            ("tomasz", "Counting what was dropped is the honest part."),
        ),
    ),
)

FAVOURITES = {  # reader -> titles they favourite
    "mira": (
        "Selling the last mug exactly once",
        "Exactly once, with offsets in Redis",
        "Burn rates instead of thresholds",
    ),
    "tomasz": (
        "Why our blog answers from memory",
        "Every await has a bound",
        "Four dashboards, one question each",
    ),
    "keiko": ("Every await has a bound", "Selling the last mug exactly once", "Late, malformed, duplicate"),
    "olu": (
        "Why our blog answers from memory",
        "Idempotency keys, compared exactly",
        "Four dashboards, one question each",
        "Every await has a bound",
    ),
}
FOLLOWS = {"mira": ("keiko", "olu"), "tomasz": ("mira",), "keiko": ("mira", "tomasz"), "olu": ("tomasz",)}

PRODUCTS = (
    Product("MUG-ASYNC", "Mug: await coffee()", 1450, 120),
    Product("TEE-EVENTLOOP-M", "T-shirt: The Event Loop, M", 2400, 60),
    Product("TEE-EVENTLOOP-L", "T-shirt: The Event Loop, L", 2400, 60),
    Product("HOODIE-P99", "Hoodie: p99 or it didn't happen", 5200, 25),
    Product("STICKERS-STACK", "Sticker pack: the whole stack", 600, 500),
    Product("NOTEBOOK-RUNBOOK", "Notebook: My Runbook", 1200, 80),
    Product("CAP-KAFKA", "Cap: at-least-once", 1900, 40),
    Product("SOCKS-IDEMPOTENT", "Socks: idempotent (buy twice, get one pair)", 900, 150),
    Product("POSTER-DASHBOARD", "Poster: Four Dashboards", 1600, 30),
    Product("KEYBOARD-60", "Mechanical keyboard, 60%", 8900, 12),
    Product("BOTTLE-BACKPRESSURE", "Water bottle: backpressure", 1750, 70),
    Product("BOOK-ASYNCIO", "Book: asyncio in production", 3900, 5),
)

ORDERS = (  # (shopper, idempotency key, [(sku, quantity)], fulfilled by the shop afterwards)
    ("mira", "demo-order-1", (("MUG-ASYNC", 2), ("STICKERS-STACK", 1)), True),
    ("tomasz", "demo-order-2", (("HOODIE-P99", 1),), True),
    ("keiko", "demo-order-3", (("POSTER-DASHBOARD", 1), ("NOTEBOOK-RUNBOOK", 2)), False),
    ("olu", "demo-order-4", (("KEYBOARD-60", 1),), False),
    ("olu", "demo-order-5", (("SOCKS-IDEMPOTENT", 3), ("CAP-KAFKA", 1), ("MUG-ASYNC", 1)), False),
)

# --------------------------------------------------------------------------------------------- HTTP


class Refused(Exception):
    """An API answered what the demo data cannot go on from; the message is the one line to print."""


@dataclass
class Api:
    http: aiohttp.ClientSession
    deadline: float  # time.monotonic() by which everything must be done
    step: str = "starting"

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        token: str | None = None,
        admin: str | None = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> tuple[int, Any]:
        """One request; a 429/503 is waited out (its Retry-After) until the deadline."""
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Token {token}"
        if admin:
            sent["Authorization"] = f"Bearer {admin}"
        while True:
            async with self.http.request(method, path, json=body, headers=sent) as resp:
                text = await resp.text()
                retry_after = resp.headers.get("Retry-After", "1")
            if resp.status in RETRYABLE and time.monotonic() + 1 < self.deadline:
                await asyncio.sleep(float(retry_after) if retry_after.isdigit() else 1.0)
                continue
            if resp.status not in ok:
                raise Refused(f"{method} {path} answered {resp.status}: {' '.join(text.split())[:300]}")
            try:
                return resp.status, json.loads(text) if text else None
            except ValueError:
                raise Refused(
                    f"{method} {path} answered {resp.status} with a body that is not JSON"
                ) from None

    async def get(self, path: str, **kwargs: Any) -> Any:
        return (await self.call("GET", path, **kwargs))[1]


async def wait_ready(api: Api, services: set[str]) -> None:
    """Each service this stack runs answers its /readyz through nginx (bounded)."""
    until = min(api.deadline, time.monotonic() + READY_TIMEOUT_S)
    for service in sorted(services & {"blog", "orders", "stream"}):
        api.step = f"waiting for {service} to be ready"
        while True:
            try:
                async with api.http.get(f"/_/{service}/readyz") as resp:
                    if resp.status == 200:
                        break
                    why = f"answered {resp.status}: {' '.join((await resp.text()).split())[:200]}"
            except aiohttp.ClientError as exc:
                why = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= until:
                raise Refused(f"{service} not ready within {READY_TIMEOUT_S:g}s (/_/{service}/readyz {why})")
            await asyncio.sleep(0.5)


# --------------------------------------------------------------------------------------------- seeding


@dataclass
class Seeded:
    authors: int = 0
    articles: int = 0
    comments: int = 0
    products: int = 0
    orders: int = 0
    fulfilled: int = 0
    tokens: dict[str, str] = field(default_factory=dict)

    def line(self, took_s: float) -> str:
        parts = []
        if self.authors:
            parts += [f"{self.articles} articles by {self.authors} authors", f"{self.comments} comments"]
        if self.products:
            parts.append(f"{self.products} products")
        if self.orders:
            parts.append(f"{self.orders} orders ({self.fulfilled} fulfilled)")
        return f"demo data: {', '.join(parts) or 'nothing to seed (no blog, no orders)'} in {took_s:.0f} s"


def passwords(run_dir: Path) -> dict[str, str]:
    """The demo authors' passwords: made once per run dir and kept there (mode 600)."""
    path = run_dir / ACCOUNTS
    known = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, password = line.partition("=")
            if name and password:
                known[name] = password
    missing = [a.username for a in AUTHORS if a.username not in known]
    if missing:
        known.update({name: secrets.token_urlsafe(12) for name in missing})
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{a.username}={known[a.username]}\n" for a in AUTHORS))
        tmp.chmod(0o600)
        tmp.replace(path)
    return known


async def sign_in(api: Api, author: Author, password: str) -> str:
    """Register the author, or sign in when the name is taken (a seeding that was cut short)."""
    api.step = f"signing up {author.username}"
    email = f"{author.username}@example.com"
    user = {"username": author.username, "email": email, "password": password}
    status, body = await api.call("POST", "/api/users", {"user": user}, ok=(200, 201, 422))
    if status == 422:
        if "has already been taken" not in json.dumps(body):
            raise Refused(f"POST /api/users answered 422: {json.dumps(body)[:300]}")
        status, body = await api.call(
            "POST",
            "/api/users/login",
            {"user": {"email": email, "password": password}},
            ok=(200, 401, 403, 422),
        )
        if status != 200:
            raise Refused(
                f"demo author {author.username} exists but {ACCOUNTS} has not its password "
                f"(a blog database from another run dir?): POST /api/users/login answered {status}"
            )
    token = str(body["user"]["token"])
    await api.call("PUT", "/api/user", {"user": {"bio": author.bio}}, token=token)
    return token


async def seed_blog(api: Api, run_dir: Path, seeded: Seeded) -> None:
    known = passwords(run_dir)
    for author in AUTHORS:
        seeded.tokens[author.username] = await sign_in(api, author, known[author.username])
    seeded.authors = len(AUTHORS)

    slugs: dict[str, str] = {}
    for author in AUTHORS:
        api.step = f"publishing {author.username}'s articles"
        listed = await api.get(f"/api/articles?author={quote(author.username)}&limit=100")
        slugs.update({a["title"]: a["slug"] for a in listed["articles"]})
    for article in ARTICLES:
        if article.title in slugs:
            continue
        api.step = f"publishing {article.title!r}"
        new = {"title": article.title, "description": article.description, "body": article.body,
               "tagList": list(article.tags)}  # fmt: skip
        _, body = await api.call(
            "POST", "/api/articles", {"article": new}, token=seeded.tokens[article.author]
        )
        slugs[article.title] = body["article"]["slug"]
    seeded.articles = len(ARTICLES)

    for article in ARTICLES:
        api.step = f"commenting on {article.title!r}"
        slug = quote(slugs[article.title])
        listed = await api.get(f"/api/articles/{slug}/comments")
        there = {(c["author"]["username"], c["body"]) for c in listed["comments"]}
        for commenter, text in article.comments:
            if (commenter, text) not in there:
                await api.call("POST", f"/api/articles/{slug}/comments", {"comment": {"body": text}},
                               token=seeded.tokens[commenter])  # fmt: skip
            seeded.comments += 1
    for reader, titles in FAVOURITES.items():
        api.step = f"{reader}'s favourites"
        for title in titles:
            await api.call(
                "POST", f"/api/articles/{quote(slugs[title])}/favorite", token=seeded.tokens[reader]
            )
    for follower, followees in FOLLOWS.items():
        api.step = f"{follower}'s follows"
        for followee in followees:
            await api.call("POST", f"/api/profiles/{followee}/follow", token=seeded.tokens[follower])


async def seed_catalogue(api: Api, admin: str, seeded: Seeded) -> dict[str, int]:
    """Every demo product (a SKU that exists is kept as it is); returns their ids by SKU."""
    for product in PRODUCTS:
        api.step = f"adding product {product.sku}"
        new = {
            "sku": product.sku,
            "name": product.name,
            "price_cents": product.price_cents,
            "stock": product.stock,
        }
        await api.call("POST", "/api/products", new, admin=admin, ok=(201, 409))
    ids: dict[str, int] = {}
    wanted = {p.sku for p in PRODUCTS}
    offset = 0
    api.step = "listing products"
    while not wanted <= ids.keys():
        page = await api.get(f"/api/products?limit=100&offset={offset}")
        ids.update({p["sku"]: int(p["id"]) for p in page["products"] if p["sku"] in wanted})
        offset += len(page["products"])
        if not page["products"] or offset >= page["count"]:
            break
    if not wanted <= ids.keys():
        raise Refused(f"GET /api/products does not list {', '.join(sorted(wanted - ids.keys()))}")
    seeded.products = len(PRODUCTS)
    return ids


async def seed_orders(api: Api, admin: str, ids: dict[str, int], seeded: Seeded, *, worker: bool) -> None:
    """The demo orders (an idempotency key replays the order it made), paid, some fulfilled."""
    placed: list[tuple[int, str, bool]] = []
    for shopper, key, lines, fulfil in ORDERS:
        api.step = f"placing {key}"
        items = [{"product_id": ids[sku], "quantity": quantity} for sku, quantity in lines]
        _, order = await api.call(
            "POST",
            "/api/orders",
            {"items": items},
            token=seeded.tokens[shopper],
            headers={"Idempotency-Key": key},
        )
        placed.append((int(order["id"]), shopper, fulfil))
    seeded.orders = len(placed)
    if not worker:
        return  # nobody pays them on this stack: they stay pending
    for order_id, shopper, fulfil in placed:
        api.step = f"waiting for order {order_id} to be paid"
        while True:
            order = await api.get(f"/api/orders/{order_id}", token=seeded.tokens[shopper])
            if order["status"] in ("paid", "fulfilled"):
                break
            if order["status"] != "pending":
                raise Refused(f"demo order {order_id} went {order['status']} instead of paid")
            await asyncio.sleep(0.2)
        if fulfil:
            if order["status"] == "paid":
                await api.call("POST", f"/api/orders/{order_id}/fulfil", admin=admin)
            seeded.fulfilled += 1


def secret(run_dir: Path, name: str) -> str:
    """The environment's value, else the run dir's (as deploy/local/run reads them)."""
    if os.environ.get(name):
        return os.environ[name]
    for line in (run_dir / "secrets.env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == name:
            return value
    raise Refused(f"{name} is not in {run_dir / 'secrets.env'}")


async def seed(front: str, run_dir: Path, services: set[str], timeout_s: float) -> str:
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(front, timeout=timeout) as http:
        api = Api(http, deadline=started + timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                await wait_ready(api, services)
                seeded = Seeded()
                if "blog" in services:
                    await seed_blog(api, run_dir, seeded)
                if "orders" in services:
                    admin = secret(run_dir, "ORDERS_ADMIN_TOKEN")
                    ids = await seed_catalogue(api, admin, seeded)
                    if seeded.tokens:  # orders are placed with the authors' tokens (the blog issues them)
                        worker = {"orders-worker", "payment-sandbox"} <= services
                        await seed_orders(api, admin, ids, seeded, worker=worker)
        except TimeoutError:
            raise Refused(f"not done within {timeout_s:g}s ({api.step})") from None
        except aiohttp.ClientError as exc:
            raise Refused(f"{api.step}: {type(exc).__name__}: {exc}") from None
    return seeded.line(time.monotonic() - started)


async def parent_gone(pid: int) -> None:
    """Returns once process ``pid`` (the runner that started us) has exited: its stack is gone too."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    gone = asyncio.Event()
    loop.add_reader(fd, gone.set)
    try:
        await gone.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def run(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    marker = args.run_dir / MARKER
    if marker.exists():
        print(f"{marker.read_text().strip()} (kept from this run dir's first start)", flush=True)
        return 0
    services = set(args.services.split())
    seeding = asyncio.create_task(seed(args.front, args.run_dir, services, args.timeout))
    orphaned = asyncio.create_task(parent_gone(args.parent or os.getppid()))
    try:
        await asyncio.wait({seeding, orphaned}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        seeding.cancel()
        orphaned.cancel()
        await asyncio.gather(seeding, orphaned, return_exceptions=True)
    if seeding.cancelled():
        return 0  # the runner is gone: nobody to tell
    failed = seeding.exception()
    if failed is not None:
        what = str(failed) if isinstance(failed, Refused) else f"{type(failed).__name__}: {failed}"
        print(f"demo data: FAILED: {what}", flush=True)
        return 1
    line = seeding.result()
    if {"blog", "orders"} <= services:  # the whole data set: later starts leave it alone
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(line + "\n")
        tmp.replace(marker)
    print(line, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--front", required=True, help="nginx's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--run-dir", required=True, type=Path, help="the stack's run dir (secrets, marker)")
    parser.add_argument(
        "--services", default="blog orders orders-worker payment-sandbox stream",
        help="the console scripts this stack runs (deploy/local/run passes its list)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole seeding")
    parser.add_argument("--parent", type=int, help="stop quietly once this process is gone (default: ours)")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130  # the stack is stopping: nothing to say


if __name__ == "__main__":
    sys.exit(main())
