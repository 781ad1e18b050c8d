"""Blog: what the cache buys, against the ceiling, under churn, in a stampede, and over time.

``python -m loadtests.bench.blog`` runs everything in one go on loopback, with wrk (``/usr/bin/wrk``)
at 64 connections and bounded durations, and prints markdown tables on stdout (progress on stderr):

* **servers** — real processes on free ports, uvloop, asyncio debug off, one SQLite file seeded
  through the API (``--articles`` articles with markdown bodies, tags, comments, favorites), a private
  ``redis-server`` (so it can be flushed): the blog with its cache (two replicas), the blog with
  ``BLOG_CACHE_ENABLED=false`` (the uncached path), and two ceilings serving *the same bytes* the blog
  sends — a bare aiohttp handler (the issue's ceiling) and the same handler inside asynccore's
  ``create_app`` (what the shared edge alone allows). The same bytes are the whole answer: the body
  and the headers the blog sends with it (content type, ETag, cache policy, CORS), less those made
  per request (Date, Server, Content-Length, X-Request-ID), which aiohttp and the edge add anyway.
  Servers are pinned to CPU 0, wrk to the other CPUs, so a server never competes with its own load
  generator.
* **endpoints** — the anonymous article list (``/api/articles``), one article (``/api/articles/{slug}``)
  and its HTML page (``/article/{slug}``): each on each server, A/B/C/D per round, median of rounds.
* **signed in** — the list and the article as a RealWorld front-end reads them once signed in:
  ``--users`` readers (default 1,000) are registered through the API (by a short-lived seeding blog
  with a cheap password hash, on the same SQLite file and Redis prefix; the measured servers keep the
  production hash), some follow a writer and favourite a few articles, and every request carries the
  next reader's token (wrk with ``signed_in.lua``), so each one pays the token check and the per-user
  overlay of ``favorited``/``following`` on the cached answer. Measured on the cached blog in the same
  rounds, right after the anonymous run of the same endpoint.
* **churn** — the list on the cached blog while Redis is flushed every 0.5 s.
* **cold-key burst** — a hot article goes cold and 200 readers hit it at once, 100 on each cached
  replica; ``blog_db_queries_total{query="article_by_slug"}`` from both replicas' ``/metrics`` says
  how many reached the database. Twice: cold after a write (its version replaced, as a write's bump
  does: one fill for both replicas), and cold after its version expired (deleted, as a day without
  writes does: a missing row version is created only once a load shows the row exists — a 404 leaves
  nothing behind — so each replica loads once unstored, then one fill).
* **memory** — a 90 % read / 10 % write mix (favorite toggles, article edits) for ``--soak-s`` seconds
  (default 600) against the cached blog, its RSS sampled every few seconds.

Targets (issue 3): cached ≥ 70 % of the ceiling and ≥ 5x the uncached path, p99 < 20 ms; under churn
p99 ≤ 2x the warm p99; a burst on a key cold after a write costs 1 query; RSS flat (≤ 10 % growth
after warm-up). Issue 19: signed-in cached reads ≥ 50 % of anonymous cached reads (the median of the
rounds' ratios), p99 < 20 ms.

While iterating, ``--endpoints-only`` (no churn, burst or soak) with ``--variants cached,stack`` (or
``cached,signed``) and ``--endpoint article`` measures just what is being worked on; the report then
shows what it has.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from redis.asyncio import Redis

from asynccore.pools.mysql import drop_database
from asynccore.testing import RedisServer, ServiceProcess, free_port, metric_value, server_url
from loadtests.bench.harness import (
    Memory,
    cpu_seconds,
    interleaved,
    load_cpus,
    local_url,
    log,
    measure,
    median,
    sample_rss,
    serve_routes,
    server_cpus,
    start_server,
    stop_on_sigterm,
    table,
)
from loadtests.bench.wrk import WrkResult, median_of, run_wrk

CONNECTIONS = 64
JWT_SECRET = "bench-secret-of-at-least-thirty-two-bytes"
PREFIX = "bench"
TAGS = [f"topic{i}" for i in range(20)]
VARIANTS = {
    "cached": "blog, cached",
    "signed": "blog, cached, signed in (a reader's token per request)",
    "uncached": "blog, cache disabled (SQLite)",
    "uncached-mariadb": "blog, cache disabled (MariaDB)",
    "bare": "ceiling: bare aiohttp, same bytes",
    "stack": "ceiling: asynccore app, same bytes",
}
ENDPOINTS = (("list", "/api/articles"), ("article", "/api/articles/{slug}"), ("page", "/article/{slug}"))
CEILING_FILES = {"list": "list.json", "article": "article.json", "page": "page.html"}
CEILING_HEADERS = "headers.json"  # endpoint → the headers the blog sent with its body
PER_REQUEST = frozenset(("date", "server", "content-length", "x-request-id", "connection", "keep-alive"))
SIGNED_IN_LUA = Path(__file__).with_name("signed_in.lua")
SIGNED_ENDPOINTS = ("list", "article")  # what the per-user overlay applies to (pages are anonymous)
READERS = 1000
WRITERS = 8
# The seeding blog's password hash: cheap, so a thousand sign-ups take seconds (reads never hash).
CHEAP_HASH = {"BLOG_ARGON2_TIME_COST": "1", "BLOG_ARGON2_MEMORY_KIB": "8", "BLOG_ARGON2_PARALLELISM": "1"}
SEED_CONCURRENCY = 16

TARGET_CEILING = 0.70
TARGET_UNCACHED = 5.0
TARGET_P99_MS = 20.0
TARGET_CHURN = 2.0
TARGET_MEMORY_GROWTH = 0.10
TARGET_SIGNED = 0.50


# ---------------------------------------------------------------------------- the ceiling servers


def serve_ceiling(stack: str, port: int, bodies: Path) -> None:
    """Serve the blog's own bytes from files, as cheaply as aiohttp allows (the ``--serve-ceiling`` side)."""
    sent = json.loads((bodies / CEILING_HEADERS).read_text())

    def handler(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        body = (bodies / CEILING_FILES[name]).read_bytes()
        headers = CIMultiDict(sent[name])

        async def send(request: web.Request) -> web.Response:
            return web.Response(body=body, headers=headers)

        return send

    routes = [
        web.get("/api/articles", handler("list")),
        web.get("/api/articles/{slug}", handler("article")),
        web.get("/article/{slug}", handler("page")),
    ]
    serve_routes(routes, port, edge=None if stack == "bare" else "ceiling")


# ---------------------------------------------------------------------------- the stack under test


@dataclass
class Stack:
    tmp: Path
    redis: RedisServer
    servers: dict[str, ServiceProcess] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    replica_url: str = ""
    token: str = ""
    author_slugs: list[str] = field(default_factory=list)
    hot_slug: str = ""
    readers: Readers | None = None
    mariadb_url: str = ""


@dataclass
class Readers:
    """The signed-in readers: their tokens (a file, one a line, for ``signed_in.lua``) and how many of
    them have something to lay over each measured answer."""

    tokens_file: Path
    tokens: list[str]
    follows: int = 0
    favourites: int = 0
    list_overlaid: int = 0  # readers who favourited an article or follow an author of the list's page
    article_overlaid: int = 0  # … of the hot article


async def start_blog(name: str, env: dict[str, str], cpus: set[int] | None) -> tuple[ServiceProcess, str]:
    port = free_port()
    url = local_url(port)
    argv = [sys.executable, "-m", "blog"]
    process = await start_server(
        argv, env={**env, "BLOG_PORT": str(port)}, health_url=f"{url}/healthz", name=name, cpus=cpus
    )
    return process, url


async def start_ceiling(stack: str, bodies: Path, cpus: set[int] | None) -> tuple[ServiceProcess, str]:
    port = free_port()
    url = local_url(port)
    argv = [sys.executable, "-m", "loadtests.bench.blog", "--serve-ceiling", stack, "--port", str(port)]
    argv += ["--bodies", str(bodies)]
    # /healthz only exists on the asynccore stack; the list route answers on both.
    process = await start_server(
        argv, env={}, health_url=f"{url}/api/articles", name=f"ceiling-{stack}", cpus=cpus
    )
    return process, url


def blog_env(stack: Stack, **overrides: str) -> dict[str, str]:
    return {
        "BLOG_DB_PATH": str(stack.tmp / "blog.db"),
        "REDIS_URL": stack.redis.url,
        "BLOG_CACHE_PREFIX": PREFIX,
        "JWT_SECRET": JWT_SECRET,
        "LOG_LEVEL": "WARNING",
        **overrides,
    }


async def seed(http: aiohttp.ClientSession, url: str, articles: int) -> tuple[str, list[str]]:
    """Users, articles (markdown bodies ~2 KB), comments and favorites through the API."""
    rng = random.Random(7)
    tokens = []
    for i in range(WRITERS):
        user = {"username": f"writer{i}", "email": f"writer{i}@bench.example", "password": "bench-password"}
        async with http.post(f"{url}/api/users", json={"user": user}) as resp:
            resp.raise_for_status()
            tokens.append((await resp.json())["user"]["token"])
    paragraph = "Cache-aside with **versioned keys** keeps reads cheap and writes honest. " * 6
    own_slugs: list[str] = []
    for i in range(articles):
        token = tokens[i % len(tokens)]
        body = f"# Part {i}\n\n" + "\n\n".join([paragraph] * 4) + "\n\n```python\nprint('hi')\n```\n"
        article = {
            "title": f"Notes on caching, part {i}",
            "description": f"What part {i} is about",
            "body": body,
            "tagList": rng.sample(TAGS, 3),
        }
        headers = {"Authorization": f"Token {token}"}
        async with http.post(f"{url}/api/articles", json={"article": article}, headers=headers) as resp:
            resp.raise_for_status()
            slug = (await resp.json())["article"]["slug"]
        if token == tokens[0]:
            own_slugs.append(slug)
        if i % 4 == 0:
            comment = {"comment": {"body": f"Comment on part {i}"}}
            async with http.post(
                f"{url}/api/articles/{slug}/comments", json=comment, headers=headers
            ) as resp:
                resp.raise_for_status()
            async with http.post(f"{url}/api/articles/{slug}/favorite", headers=headers) as resp:
                resp.raise_for_status()
    return tokens[0], own_slugs


def lua_string(text: str) -> str:
    """``text`` as a Lua string literal, every byte escaped (``\\ddd``): any path is safe."""
    return '"' + "".join(f"\\{byte:03d}" for byte in text.encode()) + '"'


def write_tokens(tokens_file: Path, tokens: list[str]) -> None:
    """The tokens, one a line, as ``signed_in.lua`` reads them."""
    tokens_file.write_text("".join(f"{token}\n" for token in tokens))


def signed_in_script(tokens_file: Path) -> str:
    """``signed_in.lua`` reading its tokens from ``tokens_file``."""
    return f"tokens_file = {lua_string(str(tokens_file))}\n" + SIGNED_IN_LUA.read_text()


async def _page(http: aiohttp.ClientSession, url: str, path: str, token: str = "") -> dict[str, Any]:
    headers = {"Authorization": f"Token {token}"} if token else {}
    async with http.get(url + path, headers=headers) as resp:
        resp.raise_for_status()
        document: dict[str, Any] = await resp.json()
        return document


async def seed_readers(
    http: aiohttp.ClientSession, url: str, count: int, hot_slug: str, tokens_file: Path
) -> Readers:
    """``count`` readers signed up through the API at ``url``; about a third follow a writer, each
    favourites three articles (a fifth also the hot one). Their tokens go to ``tokens_file``."""
    rng = random.Random(19)
    slugs: list[str] = []
    while True:  # every article, 100 a page
        found = (await _page(http, url, f"/api/articles?limit=100&offset={len(slugs)}"))["articles"]
        slugs += [article["slug"] for article in found]
        if len(found) < 100:
            break
    plans: list[tuple[str, str | None, list[str]]] = []
    for i in range(count):
        followed = f"writer{rng.randrange(WRITERS)}" if rng.random() < 0.3 else None
        picked = set(rng.sample(slugs, min(3, len(slugs))))
        if rng.random() < 0.2:
            picked.add(hot_slug)
        plans.append((f"reader{i}", followed, sorted(picked)))
    tokens: list[str] = [""] * count
    todo = iter(range(count))

    async def sign_up() -> None:
        for i in todo:
            name, followed, favourites = plans[i]
            user = {"username": name, "email": f"{name}@bench.example", "password": "bench-password"}
            async with http.post(f"{url}/api/users", json={"user": user}) as resp:
                resp.raise_for_status()
                tokens[i] = (await resp.json())["user"]["token"]
            headers = {"Authorization": f"Token {tokens[i]}"}
            if followed is not None:
                async with http.post(f"{url}/api/profiles/{followed}/follow", headers=headers) as resp:
                    resp.raise_for_status()
            for slug in favourites:
                async with http.post(f"{url}/api/articles/{slug}/favorite", headers=headers) as resp:
                    resp.raise_for_status()

    async with asyncio.TaskGroup() as group:
        for _ in range(SEED_CONCURRENCY):
            group.create_task(sign_up())
    write_tokens(tokens_file, tokens)
    page = (await _page(http, url, "/api/articles"))["articles"]
    on_page = {article["slug"] for article in page}
    page_authors = {article["author"]["username"] for article in page}
    hot_author = (await _page(http, url, f"/api/articles/{hot_slug}"))["article"]["author"]["username"]
    readers = Readers(tokens_file, tokens)
    for _, followed, favourites in plans:
        readers.follows += followed is not None
        readers.favourites += len(favourites)
        readers.list_overlaid += followed in page_authors or not on_page.isdisjoint(favourites)
        readers.article_overlaid += followed == hot_author or hot_slug in favourites
    return readers


def _flagged(articles: list[dict[str, Any]]) -> bool:
    return any(article["favorited"] or article["author"]["following"] for article in articles)


async def read_as_every_reader(
    http: aiohttp.ClientSession, url: str, readers: Readers, hot_slug: str
) -> tuple[int, int]:
    """The list and the hot article read once with every reader's token: their token versions are
    cached from then on (what "cached" measures), and the answers say how many readers saw a flag of
    their own — (on the list, on the article)."""
    on_list = on_article = 0
    todo = iter(readers.tokens)

    async def read() -> None:
        nonlocal on_list, on_article
        for token in todo:
            page = (await _page(http, url, "/api/articles", token))["articles"]
            article = (await _page(http, url, f"/api/articles/{hot_slug}", token))["article"]
            on_list += _flagged(page)  # after the awaits: `+=` across one would lose counts
            on_article += _flagged([article])

    async with asyncio.TaskGroup() as group:
        for _ in range(SEED_CONCURRENCY):
            group.create_task(read())
    return on_list, on_article


@contextlib.asynccontextmanager
async def stack_up(args: argparse.Namespace) -> AsyncIterator[Stack]:
    cpus = server_cpus(not args.no_pin)
    with tempfile.TemporaryDirectory(prefix="bench-blog-") as tmp:
        redis = RedisServer()
        stack = Stack(Path(tmp), redis)
        try:
            await redis.start()
            log("starting the cached blog and seeding it through the API")
            stack.servers["cached"], stack.urls["cached"] = await start_blog(
                "blog-cached", blog_env(stack), cpus
            )
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
                stack.token, stack.author_slugs = await seed(http, stack.urls["cached"], args.articles)
                stack.hot_slug = stack.author_slugs[0]
                if "signed" in args.variants and args.users > 0:
                    stack.readers = await signed_up(stack, http, args.users)
                bodies = stack.tmp / "bodies"
                bodies.mkdir()
                sent: dict[str, dict[str, str]] = {}
                for name, path in paths(stack).items():
                    async with http.get(stack.urls["cached"] + path) as resp:
                        resp.raise_for_status()
                        (bodies / CEILING_FILES[name]).write_bytes(await resp.read())
                        sent[name] = {k: v for k, v in resp.headers.items() if k.lower() not in PER_REQUEST}
                (bodies / CEILING_HEADERS).write_text(json.dumps(sent))
            stack.servers["replica"], stack.replica_url = await start_blog(
                "blog-replica", blog_env(stack), cpus
            )
            uncached = blog_env(stack, BLOG_CACHE_ENABLED="false", BLOG_CACHE_PREFIX=f"{PREFIX}-off")
            stack.servers["uncached"], stack.urls["uncached"] = await start_blog(
                "blog-uncached", uncached, cpus
            )
            if "uncached-mariadb" in args.variants:
                await start_on_mariadb(stack, args.articles, cpus)
            for variant in ("bare", "stack"):
                stack.servers[variant], stack.urls[variant] = await start_ceiling(variant, bodies, cpus)
            await signed_in_warm(stack)
            yield stack
        finally:
            for process in stack.servers.values():
                await process.stop()
            await redis.stop()
            if stack.mariadb_url:
                await drop_database(stack.mariadb_url)


async def start_on_mariadb(stack: Stack, articles: int, cpus: set[int] | None) -> None:
    """The uncached blog on a MariaDB database of its own (the machine's server, not pinned: it is the
    database host), seeded through the API with what the SQLite file holds (the same seed, the same
    slugs), so the two uncached servers answer the same requests over the same rows."""
    stack.mariadb_url = f"{server_url('MYSQL')}/blog_bench_{random.randbytes(6).hex()}"
    log("seeding the same articles into MariaDB through a seeding blog")
    env = blog_env(stack, BLOG_DATABASE_URL=stack.mariadb_url, BLOG_CACHE_PREFIX=f"{PREFIX}-maria")
    seeder, url = await start_blog("blog-seeder-mariadb", {**env, **CHEAP_HASH}, None)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            _, slugs = await seed(http, url, articles)
    finally:
        await seeder.stop()
    if slugs[0] != stack.hot_slug:
        raise RuntimeError(f"MariaDB seeded {slugs[0]!r} where SQLite has {stack.hot_slug!r}")
    stack.servers["uncached-mariadb"], stack.urls["uncached-mariadb"] = await start_blog(
        "blog-uncached-mariadb", {**env, "BLOG_CACHE_ENABLED": "false"}, cpus
    )


async def signed_up(stack: Stack, http: aiohttp.ClientSession, count: int) -> Readers:
    """The readers, signed up through a short-lived seeding blog on the same data (a cheap hash)."""
    log(f"signing up {count} readers (follows and favourites) through a seeding blog")
    seeder, url = await start_blog("blog-seeder", blog_env(stack, **CHEAP_HASH), None)
    try:
        readers = await seed_readers(http, url, count, stack.hot_slug, stack.tmp / "tokens.txt")
    finally:
        await seeder.stop()
    log(
        f"{count} readers: {readers.follows} follow a writer, {readers.favourites} favourites; "
        f"{readers.list_overlaid} see a flag of their own on the list, "
        f"{readers.article_overlaid} on the article"
    )
    return readers


async def signed_in_warm(stack: Stack) -> None:
    """Every reader reads once on the cached blog — after every server started (a replica that
    connects bumps the cache's epoch) — and sees exactly the flags seeded for them: the overlay is
    real, reader by reader, and every token's version is cached when the measuring starts."""
    readers = stack.readers
    if readers is None:
        return
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        seen = await read_as_every_reader(http, stack.urls["cached"], readers, stack.hot_slug)
    if seen != (readers.list_overlaid, readers.article_overlaid):
        raise RuntimeError(
            f"readers who saw a flag of their own (list, article): {seen}, seeded "
            f"{(readers.list_overlaid, readers.article_overlaid)}"
        )


def paths(stack: Stack) -> dict[str, str]:
    return {
        "list": "/api/articles",
        "article": f"/api/articles/{stack.hot_slug}",
        "page": f"/article/{stack.hot_slug}",
    }


# ---------------------------------------------------------------------------- measurements


Runs = dict[tuple[str, str], list[WrkResult]]  # (endpoint, variant) → one result a round
CpuRuns = dict[tuple[str, str], list[float]]  # (endpoint, variant) → server CPU µs per request, a round


def measured(stack: Stack, name: str, variant: str) -> bool:
    """Whether ``variant`` applies to endpoint ``name`` (signed-in reads: the API's, with readers)."""
    if variant == "signed":
        return name in SIGNED_ENDPOINTS and stack.readers is not None
    return True


async def measure_cached(
    url: str, pid: int, lua: str | None, args: argparse.Namespace
) -> tuple[WrkResult, float]:
    """As :func:`measure` (``lua``: the signed-in script, or none), and the server's CPU per request
    (µs, from ``/proc``) over the measured run: a figure the machine's other load hardly moves."""
    if args.warmup > 0:
        await run_wrk(
            url,
            connections=args.connections,
            duration_s=args.warmup,
            lua=lua,
            cpus=load_cpus(not args.no_pin),
        )
    before = cpu_seconds(pid)
    result = await run_wrk(
        url, connections=args.connections, duration_s=args.duration, lua=lua, cpus=load_cpus(not args.no_pin)
    )
    return result, (cpu_seconds(pid) - before) / max(1, result.requests) * 1e6


async def endpoints(stack: Stack, args: argparse.Namespace) -> tuple[Runs, CpuRuns]:
    """Each endpoint on each server, the servers taking turns, once a round; every round's result, and
    the cached blog's CPU per request (anonymous and signed in)."""
    cells = [(name, path, variant) for name, path in paths(stack).items() if name in args.endpoint
             for variant in args.variants if measured(stack, name, variant)]  # fmt: skip
    runs: Runs = {}
    cpu: CpuRuns = {}
    for round_no, (name, path, variant) in interleaved(args.rounds, cells):
        if variant in ("cached", "signed"):
            pid = stack.servers["cached"].pid
            assert pid is not None
            lua = (
                signed_in_script(stack.readers.tokens_file) if stack.readers and variant == "signed" else None
            )
            result, cpu_us = await measure_cached(stack.urls["cached"] + path, pid, lua, args)
            cpu.setdefault((name, variant), []).append(cpu_us)
            figures = f"CPU {cpu_us:5.0f} us/req"
        else:
            result = await measure(
                stack.urls[variant] + path,
                warmup_s=args.warmup,
                duration_s=args.duration,
                connections=args.connections,
                cpus=load_cpus(not args.no_pin),
            )
            figures = ""
        runs.setdefault((name, variant), []).append(result)
        figures = f"{result.requests_per_s:9.0f} req/s  p99 {result.p99_ms:6.2f} ms  {figures}"
        log(f"round {round_no} {name:8} {variant:9} {figures}")
    return runs, cpu


async def churn(stack: Stack, args: argparse.Namespace) -> WrkResult:
    """The list while Redis loses everything every 0.5 s."""
    redis = Redis.from_url(stack.redis.url, socket_timeout=2, socket_connect_timeout=2)
    flushes = 0

    async def flusher() -> None:
        nonlocal flushes
        while True:
            await asyncio.sleep(0.5)
            async with asyncio.timeout(2):
                await redis.flushall()
            flushes += 1

    task = asyncio.create_task(flusher())
    try:
        url = stack.urls["cached"] + paths(stack)["list"]
        result = await run_wrk(
            url, connections=args.connections, duration_s=args.duration, cpus=load_cpus(not args.no_pin)
        )
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)
        async with asyncio.timeout(5):
            await redis.aclose()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise RuntimeError("flushing Redis failed") from task.exception()
    log(f"churn: {flushes} flushes, {result.requests_per_s:.0f} req/s, p99 {result.p99_ms:.2f} ms")
    return result


async def _queries(http: aiohttp.ClientSession, url: str) -> float:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return metric_value(text, "blog_db_queries_total", query="article_by_slug") or 0.0


@dataclass(frozen=True, slots=True)
class Bursts:
    """Database queries a cold-key burst cost, by how the key went cold."""

    written: float  # its version replaced, as a write's bump does
    expired: float  # its version gone, as a day without writes leaves it


async def cold_key_bursts(stack: Stack) -> Bursts:
    return Bursts(await cold_key_burst(stack, "written"), await cold_key_burst(stack, "expired"))


async def cold_key_burst(stack: Stack, cold: str, readers: int = 200) -> float:
    """Database queries caused by ``readers`` concurrent reads of a key that just went cold, on two replicas.

    ``cold``: ``written`` (its version replaced) or ``expired`` (its version gone)."""
    replicas = [stack.urls["cached"], stack.replica_url]
    path = paths(stack)["article"]
    connector = aiohttp.TCPConnector(limit=readers + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        for url in replicas:  # both replicas hot first
            async with http.get(url + path) as resp:
                resp.raise_for_status()
        redis = Redis.from_url(stack.redis.url, socket_timeout=2)
        try:
            version = f"{PREFIX}:v:a:{stack.hot_slug}"
            if cold == "expired":  # what a day without writes does: the version is gone
                await redis.delete(version)
            else:  # what a write does: a new token, so every tier misses
                await redis.set(version, secrets.token_hex(6), ex=24 * 3600)
        finally:
            await redis.aclose()
        await asyncio.sleep(0.2)  # the replicas apply Redis's invalidation push
        before = sum([await _queries(http, url) for url in replicas])
        start = asyncio.Event()

        async def read(url: str) -> int:
            await start.wait()
            async with http.get(url + path) as resp:
                await resp.read()
                return resp.status

        tasks = [asyncio.create_task(read(replicas[i % 2])) for i in range(readers)]
        await asyncio.sleep(0)
        start.set()
        statuses = await asyncio.gather(*tasks)
        after = sum([await _queries(http, url) for url in replicas])
    if set(statuses) != {200}:
        raise RuntimeError(f"burst answers: {sorted(set(statuses))}")
    log(f"cold-key burst ({cold}): {readers} readers on 2 replicas, {after - before:.0f} database queries")
    return after - before


def soak_script(stack: Stack) -> str:
    slugs = ", ".join(f'"{slug}"' for slug in stack.author_slugs[:20])
    return f"""
local slugs = {{{slugs}}}
local token = "Token {stack.token}"
local counter = 0
request = function()
  counter = counter + 1
  local slug = slugs[math.random(#slugs)]
  local dice = math.random(100)
  if dice <= 30 then return wrk.format("GET", "/api/articles") end
  if dice <= 55 then return wrk.format("GET", "/api/articles/" .. slug) end
  if dice <= 80 then return wrk.format("GET", "/article/" .. slug) end
  if dice <= 85 then return wrk.format("GET", "/api/tags") end
  if dice <= 90 then return wrk.format("GET", "/?page=" .. math.random(3)) end
  if dice <= 95 then
    local method = "POST"
    if math.random(2) == 1 then method = "DELETE" end
    return wrk.format(method, "/api/articles/" .. slug .. "/favorite", {{["Authorization"] = token}})
  end
  local body = '{{"article":{{"body":"edited ' .. counter .. '"}}}}'
  return wrk.format("PUT", "/api/articles/" .. slug,
    {{["Authorization"] = token, ["Content-Type"] = "application/json"}}, body)
end
"""


@dataclass
class Soak:
    """The cached blog's RSS over a read/write mix, and what the mix achieved."""

    memory: Memory
    load: WrkResult


async def memory_soak(stack: Stack, args: argparse.Namespace) -> Soak:
    pid = stack.servers["cached"].pid
    assert pid is not None
    memory, stop = Memory(), asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, memory, stop, interval_s=max(1.0, args.soak_s / 120)))
    try:
        load = await run_wrk(
            stack.urls["cached"] + "/",
            connections=args.connections,
            duration_s=args.soak_s,
            lua=soak_script(stack),
            cpus=load_cpus(not args.no_pin),
        )
    finally:
        stop.set()
        await sampler
    log(f"memory: {memory.warm:.1f} MiB after warm-up, {memory.end:.1f} MiB at the end")
    return Soak(memory, load)


# ---------------------------------------------------------------------------- the report


def row(what: str, measured: str, goal: str, met: bool | None) -> str:
    shown = "—" if met is None else ("yes" if met else "**NO**")
    return f"| {what} | {measured} | {goal} | {shown} |"


def _ratio(results: dict[tuple[str, str], WrkResult], name: str, baseline: str) -> float | None:
    """Cached req/s over ``baseline``'s for endpoint ``name``; ``None`` if either was not measured."""
    if (name, "cached") not in results or (name, baseline) not in results:
        return None
    return results[(name, "cached")].requests_per_s / results[(name, baseline)].requests_per_s


def signed_ratios(runs: Runs, name: str) -> list[float]:
    """Signed-in req/s over anonymous req/s of endpoint ``name``, round by round (each pair measured
    back to back, so a slow minute of the machine moves both)."""
    pairs = zip(runs.get((name, "cached"), []), runs.get((name, "signed"), []), strict=False)
    return [signed.requests_per_s / anonymous.requests_per_s for anonymous, signed in pairs]


def backend_rows(runs: Runs) -> list[str]:
    """Uncached MariaDB against uncached SQLite (issue 20): context, no target; round by round, as each
    pair ran back to back."""
    lines = []
    for name, _ in ENDPOINTS:
        pairs = zip(runs.get((name, "uncached"), []), runs.get((name, "uncached-mariadb"), []), strict=False)
        ratios = [maria.requests_per_s / lite.requests_per_s for lite, maria in pairs]
        if ratios:
            rounds = ", ".join(f"{r:.2f}" for r in ratios)
            lines.append(
                row(
                    f"{name}: uncached MariaDB / uncached SQLite (issue 20, context; rounds: {rounds})",
                    f"{median(ratios):.2f}",
                    "",
                    None,
                )
            )
    return lines


def signed_rows(runs: Runs, results: dict[tuple[str, str], WrkResult]) -> list[str]:
    """The issue-19 targets: signed-in cached reads against anonymous cached reads, and their p99."""
    lines = []
    for name in SIGNED_ENDPOINTS:
        ratios = signed_ratios(runs, name)
        if ratios:
            ratio = median(ratios)
            rounds = ", ".join(f"{r:.2f}" for r in ratios)
            lines.append(
                row(
                    f"{name}: signed-in cached / anonymous cached (issue 19; median of rounds: {rounds})",
                    f"{ratio:.2f}",
                    f">= {TARGET_SIGNED:.2f}",
                    ratio >= TARGET_SIGNED,
                )
            )
        if (signed := results.get((name, "signed"))) is not None:
            lines.append(
                row(
                    f"{name}: signed-in cached p99 (issue 19)",
                    f"{signed.p99_ms:.2f} ms",
                    f"< {TARGET_P99_MS:.0f} ms",
                    signed.p99_ms < TARGET_P99_MS,
                )
            )
    return lines


def cpu_note(cpu: CpuRuns) -> list[str]:
    """The cached blog's CPU per request, anonymous and signed in: what the signed-in path costs."""
    parts = []
    for name in SIGNED_ENDPOINTS:
        anonymous, signed = cpu.get((name, "cached")), cpu.get((name, "signed"))
        if anonymous and signed:
            per_round = ", ".join(f"{a:.0f}/{s:.0f}" for a, s in zip(anonymous, signed, strict=False))
            parts.append(
                f"{name} {median(anonymous):.0f} µs anonymous, {median(signed):.0f} µs signed in "
                f"(rounds: {per_round})"
            )
    if not parts:
        return []
    return [
        "",
        "The cached blog's CPU per request (its process, from `/proc`, medians): " + "; ".join(parts) + ".",
    ]


def signed_note(readers: Readers | None, runs: Runs) -> list[str]:
    if readers is None or not any(variant == "signed" for _, variant in runs):
        return []
    count = len(readers.tokens)
    share = 100 / count
    return [
        "",
        f"Signed in: {count:,} readers signed up through the API; every request carries the next "
        "reader's token (`Authorization: Token …`, wrk's `request()` hook in `signed_in.lua`), so each one "
        "verifies a JWT, checks the token's version and lays that reader's `favorited`/`following` over the "
        f"cached answer. {readers.follows} readers follow a writer and they hold "
        f"{readers.favourites:,} favourites: {readers.list_overlaid * share:.0f} % of the list reads and "
        f"{readers.article_overlaid * share:.0f} % of the article reads carry a flag of the reader's own "
        "(the answer is rewritten), the others go out as the cached bytes.",
    ]


def report(
    args: argparse.Namespace,
    runs: Runs,
    churned: WrkResult | None,
    burst: Bursts | None,
    soak: Soak | None,
    readers: Readers | None = None,
    cpu: CpuRuns | None = None,
) -> str:
    results = {key: median_of(results) for key, results in runs.items()}
    lines = [
        "## Blog: cache, ceiling and churn",
        "",
        f"wrk -t2 -c{args.connections} -d{args.duration}s (after a {args.warmup}s warm-up per run), "
        f"{args.rounds} round(s), variants interleaved, median per variant; {args.articles} seeded articles; "
        "servers pinned to CPU 0, wrk to the rest; uvloop, asyncio debug off. The MariaDB rows: the "
        "machine's MariaDB server (not pinned: it is the database host) over loopback.",
        "",
        *table(
            ["endpoint", "server", "req/s", "p50 ms", "p99 ms", "errors"],
            [
                [
                    f"`{path}`",
                    label,
                    f"{r.requests_per_s:.0f}",
                    f"{r.p50_ms:.2f}",
                    f"{r.p99_ms:.2f}",
                    r.errors,
                ]
                for name, path in ENDPOINTS
                for variant, label in VARIANTS.items()
                if (r := results.get((name, variant))) is not None
            ],
            align="llrrrr",
        ),
        "",
        *table(["target (issue 3 unless said)", "measured", "goal", "met"], [], align="lrrl"),
    ]
    for name, _ in ENDPOINTS:
        ceiling, stack, uncached = (_ratio(results, name, b) for b in ("bare", "stack", "uncached"))
        if ceiling is not None:
            lines.append(
                row(
                    f"{name}: cached / bare-aiohttp ceiling",
                    f"{ceiling:.2f}",
                    f">= {TARGET_CEILING:.2f}",
                    ceiling >= TARGET_CEILING,
                )
            )
        if stack is not None:
            lines.append(row(f"{name}: cached / asynccore-app ceiling (context)", f"{stack:.2f}", "", None))
        if uncached is not None:
            lines.append(
                row(
                    f"{name}: cached / uncached",
                    f"{uncached:.1f}x",
                    f">= {TARGET_UNCACHED:.0f}x",
                    uncached >= TARGET_UNCACHED,
                )
            )
        if (name, "cached") in results:
            cached = results[(name, "cached")]
            lines.append(
                row(
                    f"{name}: cached p99",
                    f"{cached.p99_ms:.2f} ms",
                    f"< {TARGET_P99_MS:.0f} ms",
                    cached.p99_ms < TARGET_P99_MS,
                )
            )
    lines += signed_rows(runs, results)
    lines += backend_rows(runs)
    if churned is not None and burst is not None and ("list", "cached") in results:
        warm = results[("list", "cached")].p99_ms
        churn_ratio = churned.p99_ms / warm
        lines += [
            row(
                "list under churn (FLUSHALL every 0.5 s): p99 / warm p99",
                f"{churned.p99_ms:.2f} / {warm:.2f} ms = {churn_ratio:.2f}",
                f"<= {TARGET_CHURN:.0f}",
                churn_ratio <= TARGET_CHURN,
            ),
            row(
                "200-reader cold-key burst on 2 replicas, cold after a write: database queries",
                f"{burst.written:.0f}",
                "1",
                burst.written == 1,
            ),
            row(
                "… cold after its version expired (a day without writes; context: each replica loads once"
                " unstored, then one fill, as a 404 must leave nothing behind)",
                f"{burst.expired:.0f}",
                "",
                None,
            ),
        ]
    if soak is not None:
        memory = soak.memory
        lines.append(
            row(
                f"RSS over a {args.soak_s} s read/write mix ({soak.load.requests_per_s:.0f} req/s, "
                f"{soak.load.errors} errors): end / after warm-up",
                f"{memory.end:.1f} / {memory.warm:.1f} MiB ({memory.growth * 100:+.1f} %)",
                f"<= +{TARGET_MEMORY_GROWTH * 100:.0f} %",
                memory.growth <= TARGET_MEMORY_GROWTH,
            )
        )
    lines += signed_note(readers, runs)
    lines += cpu_note(cpu or {})
    if churned is not None:
        lines += [
            "",
            f"Under churn: {churned.requests_per_s:.0f} req/s, p50 {churned.p50_ms:.2f} ms, "
            f"{churned.errors} errors.",
        ]
    lines += [
        "",
        "The bare-aiohttp ceiling has nothing around its handler; the asynccore-app "
        "ceiling is the same handler behind the shared stack every service runs (request id, RED "
        "metrics, errors, deadline), so the gap between the two ceilings is the stack's cost and the gap "
        "from the second to the cached blog is the cache's.",
    ]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> str:
    stop_on_sigterm()
    per_run_s = args.duration + args.warmup + 30
    async with stack_up(args) as stack:
        async with asyncio.timeout(args.rounds * len(args.endpoint) * len(args.variants) * per_run_s):
            runs, cpu = await endpoints(stack, args)
        churned, burst, soak = None, None, None
        if args.endpoints_only:
            return report(args, runs, churned, burst, soak, stack.readers, cpu)
        async with asyncio.timeout(per_run_s):
            churned = await churn(stack, args)
        async with asyncio.timeout(120):
            burst = await cold_key_bursts(stack)
        if args.soak_s > 0:
            async with asyncio.timeout(args.soak_s + 60):
                soak = await memory_soak(stack, args)
    return report(args, runs, churned, burst, soak, stack.readers, cpu)


def _choices(allowed: Iterable[str]) -> Callable[[str], list[str]]:
    known = list(allowed)

    def parse(text: str) -> list[str]:
        picked = [item.strip() for item in text.split(",") if item.strip()]
        unknown = sorted(set(picked) - set(known))
        if unknown or not picked:
            raise argparse.ArgumentTypeError(f"choose from {','.join(known)} (got {text!r})")
        return [item for item in known if item in picked]

    return parse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs: 1 round of 5 s, 30 s soak")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds over all variants (default 3: the median of three is not moved by one disturbed run)",
    )
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--articles", type=int, default=200, help="articles seeded through the API")
    parser.add_argument(
        "--users", type=int, default=READERS, help="signed-in readers, one token each (0: no signed-in reads)"
    )
    parser.add_argument(
        "--soak-s", type=int, default=600, help="seconds of read/write mix for memory (0: skip)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and wrk to CPUs")
    parser.add_argument(
        "--variants",
        type=_choices(VARIANTS),
        default=list(VARIANTS),
        help=f"comma-separated servers to measure (default: all of {','.join(VARIANTS)})",
    )
    parser.add_argument(
        "--endpoint",
        type=_choices(CEILING_FILES),
        default=list(CEILING_FILES),
        help=f"comma-separated endpoints to measure (default: all of {','.join(CEILING_FILES)})",
    )
    parser.add_argument(
        "--endpoints-only",
        action="store_true",
        help="measure the endpoints only: no churn, cold-key burst or memory soak (for iterating)",
    )
    parser.add_argument("--serve-ceiling", choices=["bare", "stack"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bodies", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_ceiling:
        serve_ceiling(args.serve_ceiling, args.port, args.bodies)
        return
    if args.quick:
        args.duration, args.warmup, args.rounds, args.soak_s, args.articles = 5, 1, 1, 30, 100
    print(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
