"""The blog's anonymous reads, async (our service) vs sync (Flask under gunicorn), measured in one run.

``python -m loadtests.bench.async_vs_sync [--quick]`` does, on loopback only:

1. starts the real blog (``python -m blog``) on a fresh SQLite file and seeds it *through the blog's
   own API* (a few authors, a few hundred articles), so the data is exactly what the blog writes;
2. starts, on the same file, the blog again with the cache off (each read runs its SQL, as the
   baseline does), once on uvloop and once on the stdlib asyncio loop (``EVENT_LOOP=asyncio``), and the
   synchronous baseline (:mod:`loadtests.bench.sync_baseline`: same SQL, same JSON) under gunicorn;
3. checks that every server returns the same JSON for both endpoints — otherwise nothing is compared;
4. drives the article list and the article page with ``wrk`` at each connection count, the servers
   taking turns within each cell (A/B/C/D, repeated), and keeps the median of the runs;
5. measures the cost of blocking the loop: the p99 of anonymous reads alone, then while sign-ins
   (``POST /api/users/login``, Argon2id) run beside them with hashing in the executor, then with
   hashing on the event loop (a blog started with ``BLOG_HASH_ON_LOOP=1``);
6. writes ``results.md``, ``results.json`` and PNG plots to ``loadtests/reports/bench-<timestamp>/``
   and prints the markdown.

Fairness: every server is one process (the blog has no multi-process mode; gunicorn gets
``--workers=1``), all are pinned to CPU 0 and wrk to the other CPUs, so each server has exactly one core
and never competes with its load generator. Idle servers wait on their sockets and cost nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from asynccore.limits import gather_limited
from asynccore.testing import ServiceProcess, free_port
from blog.settings import BlogSettings
from loadtests.bench import sync_baseline
from loadtests.bench.harness import (
    QUIET_ENV,
    delete_keys,
    interleaved,
    load_cpus,
    log,
    pinned,
    server_cpus,
    stop_on_sigterm,
    table,
)
from loadtests.bench.plots import plot_vs_connections
from loadtests.bench.wrk import WrkResult, median_of, request_script, run_wrk, wrk_argv

__all__ = [
    "PLOTS",
    "Plan",
    "Results",
    "Server",
    "blog_env",
    "check_same_json",
    "drop_prefix",
    "findings",
    "main",
    "paths",
    "render",
    "seed",
    "write_plots",
]

REPORTS = Path(__file__).resolve().parents[3] / "reports"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)

ENDPOINTS = {"list": "article list", "page": "article page"}
# The grid's servers, in the order they take turns and appear in tables.
SERVERS = {
    "sync": "sync: Flask + gunicorn (1 sync worker)",
    "async": "async: blog, uvloop, cache off",
    "asyncio": "async: blog, asyncio loop, cache off",
    "cached": "async: blog, uvloop, cache on",
}
# The charts, by what they show; render() links them by these names, next to results.md.
PLOTS = {"throughput": "async-vs-sync-throughput.png", "p99": "async-vs-sync-p99.png"}
# A 1-minute load average above this means something besides the benchmark was using the CPUs.
BUSY_LOAD = 1.5
# Servers that exist only for the blocking-the-loop measurement.
HASH_ON_LOOP = "hash-on-loop"


@dataclass(frozen=True)
class Plan:
    """How much to measure; ``--quick`` shrinks durations, never the number of runs."""

    connections: tuple[int, ...]
    runs: int
    duration_s: int
    warmup_s: int
    articles: int
    authors: int
    blocking_connections: int
    login_connections: int
    blocking_duration_s: int


DEFAULT_PLAN = Plan(
    connections=(1, 16, 64, 256),
    runs=3,
    duration_s=3,
    warmup_s=1,
    articles=300,
    authors=5,
    blocking_connections=16,
    login_connections=2,
    blocking_duration_s=6,
)
QUICK_PLAN = replace(DEFAULT_PLAN, duration_s=1, articles=200, authors=4, blocking_duration_s=3)


@dataclass
class Results:
    """Everything measured, as plain data: ``results.json`` is this, and report.py reads it back."""

    started: str
    plan: dict[str, Any]
    commands: dict[str, str]
    seeded: dict[str, Any]
    # (endpoint, server, connections) → runs, flattened for JSON.
    grid: list[dict[str, Any]] = field(default_factory=list)
    # case → {"reads": runs, "logins": runs}; a case the blog cannot run is absent.
    blocking: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # 1-minute load average before and after: anything else running on the machine shows here.
    load: list[float] = field(default_factory=list)

    def _runs(self, endpoint: str, server: str, connections: int) -> list[dict[str, Any]] | None:
        for cell in self.grid:
            if (cell["endpoint"], cell["server"], cell["connections"]) == (endpoint, server, connections):
                runs: list[dict[str, Any]] = cell["runs"]
                return runs
        return None

    def add(self, endpoint: str, server: str, connections: int, run: WrkResult) -> None:
        runs = self._runs(endpoint, server, connections)
        if runs is None:
            runs = []
            self.grid.append(
                {"endpoint": endpoint, "server": server, "connections": connections, "runs": runs}
            )
        runs.append(asdict(run))

    def cell(self, endpoint: str, server: str, connections: int) -> WrkResult | None:
        """The median over the runs of one cell; None if it was not measured."""
        runs = self._runs(endpoint, server, connections)
        return median_of([WrkResult(**run) for run in runs]) if runs else None

    def blocking_median(self, case: str, side: str) -> WrkResult | None:
        runs = self.blocking.get(case, {}).get(side)
        return median_of([WrkResult(**run) for run in runs]) if runs else None

    @property
    def connections(self) -> list[int]:
        return sorted({int(cell["connections"]) for cell in self.grid})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Results:
        return cls(**json.loads(text))


# ---------------------------------------------------------------------------- servers


def blog_env(
    port: int, db: Path, prefix: str, *, cache: bool, loop: str, hash_on_loop: bool
) -> dict[str, str]:
    env = {
        "BLOG_PORT": str(port),
        "BLOG_DB_PATH": str(db),
        "BLOG_CACHE_PREFIX": prefix,
        "BLOG_CACHE_ENABLED": "true" if cache else "false",
        "EVENT_LOOP": loop,
        "REDIS_URL": REDIS_URL,
        **QUIET_ENV,
    }
    if hash_on_loop:
        env["BLOG_HASH_ON_LOOP"] = "1"
    return env


def _shown_env(env: dict[str, str]) -> str:
    keep = ("BLOG_CACHE_ENABLED", "EVENT_LOOP", "BLOG_HASH_ON_LOOP")
    return " ".join(f"{name}={env[name]}" for name in keep if name in env)


@dataclass
class Server:
    key: str
    process: ServiceProcess
    base: str
    command: str


def _blog_server(
    key: str, db: Path, prefix: str, *, cache: bool, loop: str, hash_on_loop: bool = False
) -> Server:
    port = free_port()
    env = blog_env(port, db, prefix, cache=cache, loop=loop, hash_on_loop=hash_on_loop)
    argv = pinned([sys.executable, "-m", "blog"], server_cpus())
    base = f"http://127.0.0.1:{port}"
    process = ServiceProcess(argv, env=env, health_url=f"{base}/healthz", name=f"bench-{key}")
    return Server(key, process, base, f"{_shown_env(env)} {' '.join(argv)}")


def _sync_server(db: Path) -> Server:
    port = free_port()
    argv = pinned(sync_baseline.gunicorn_argv(port, workers=1), server_cpus())
    env = {"BLOG_DB_PATH": str(db), "PYTHONASYNCIODEBUG": ""}
    base = f"http://127.0.0.1:{port}"
    process = ServiceProcess(argv, env=env, health_url=f"{base}/healthz", name="bench-sync")
    return Server("sync", process, base, f"BLOG_DB_PATH=… {' '.join(argv)}")


def hash_on_loop_supported() -> bool:
    """Whether this blog has the ``BLOG_HASH_ON_LOOP`` switch (settings ignore unknown variables)."""
    return "blog_hash_on_loop" in BlogSettings.model_fields


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Seeded:
    slug: str  # the article the page benchmark reads
    email: str  # a user the sign-in load logs in as
    password: str
    articles: int
    authors: int


WORDS = [
    *("async", "loop", "await", "cache", "redis", "sqlite", "query", "index", "latency", "throughput"),
    *("queue", "socket", "worker", "thread", "process", "kernel", "buffer", "request", "response"),
    *("header", "token", "stream", "batch", "window", "partition", "replica"),
]
TAGS = [f"tag{n}" for n in range(12)]


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


async def seed(base: str, plan: Plan, rng: random.Random) -> Seeded:
    """Authors and articles written through the blog's API (its validation, slugs, cache bumps)."""
    password = "bench-" + uuid.uuid4().hex
    run = uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession(base, timeout=HTTP_TIMEOUT) as session:

        async def register(n: int) -> str:
            user = {
                "username": f"bench-{run}-{n}",
                "email": f"bench-{run}-{n}@example.com",
                "password": password,
            }
            async with session.post("/api/users", json={"user": user}) as resp:
                body = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"register failed: {resp.status} {body}")
                return str(body["user"]["token"])

        tokens = [await register(n) for n in range(plan.authors)]

        async def write(n: int) -> str:
            paragraphs = "\n\n".join(_text(rng, 60) for _ in range(4))
            article = {
                "title": f"Bench {n}: {_text(rng, 5)}",
                "description": _text(rng, 15),
                "body": f"# Part {n}\n\n{paragraphs}",
                "tagList": rng.sample(TAGS, 2),
            }
            headers = {"Authorization": f"Token {tokens[n % len(tokens)]}"}
            async with session.post("/api/articles", json={"article": article}, headers=headers) as resp:
                body = await resp.json()
                if resp.status not in (200, 201):
                    raise RuntimeError(f"create article failed: {resp.status} {body}")
                return str(body["article"]["slug"])

        slugs = await gather_limited(8, *(write(n) for n in range(plan.articles)))
    return Seeded(slugs[len(slugs) // 2], f"bench-{run}-0@example.com", password, plan.articles, plan.authors)


def paths(seeded: Seeded) -> dict[str, str]:
    return {"list": "/api/articles?limit=20", "page": f"/api/articles/{seeded.slug}"}


async def check_same_json(servers: Sequence[Server], endpoint_paths: dict[str, str]) -> None:
    """Every server answers both endpoints with 200 and the same JSON, or the comparison is void."""
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
        for endpoint, path in endpoint_paths.items():
            bodies: dict[str, Any] = {}
            for server in servers:
                async with session.get(server.base + path) as resp:
                    raw = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{server.key} {path}: {resp.status} {raw[:200]!r}")
                    bodies[server.key] = orjson.loads(raw)
            reference_key, reference = next(iter(bodies.items()))
            for key, body in bodies.items():
                if body != reference:
                    raise RuntimeError(f"{endpoint}: {key} and {reference_key} return different JSON")


async def drop_prefix(prefix: str) -> None:
    """Delete every Redis key the bench blogs wrote (they all start with ``prefix:``)."""
    redis = Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        await delete_keys(redis, f"{prefix}:*")
    finally:
        await redis.aclose()


# ---------------------------------------------------------------------------- measuring


async def measure_grid(
    results: Results, servers: dict[str, Server], urls: dict[str, str], plan: Plan
) -> None:
    cpus = load_cpus()
    threads = len(cpus) if cpus else 1
    for endpoint, path in urls.items():
        for server in servers.values():
            await run_wrk(
                server.base + path, connections=16, duration_s=plan.warmup_s, threads=threads, cpus=cpus
            )
        for connections in plan.connections:
            for run_no, (key, server) in interleaved(plan.runs, servers.items()):
                result = await run_wrk(
                    server.base + path,
                    connections=connections,
                    duration_s=plan.duration_s,
                    threads=threads,
                    cpus=cpus,
                )
                results.add(endpoint, key, connections, result)
                log(
                    f"{endpoint:4s} c={connections:<3d} run {run_no} {key:8s} "
                    f"{result.requests_per_s:8.0f} req/s p99 {result.p99_ms:8.2f} ms "
                    f"errors {result.errors}"
                )


async def measure_blocking(
    results: Results, servers: dict[str, Server], read_path: str, seeded: Seeded, plan: Plan
) -> None:
    """Reads alone, then reads beside sign-ins: hashing in the executor, then on the loop."""
    cpus = load_cpus()
    threads = len(cpus) if cpus else 1
    login = request_script(
        "POST",
        orjson.dumps({"user": {"email": seeded.email, "password": seeded.password}}).decode(),
        {"Content-Type": "application/json"},
    )
    cases = [("reads alone", "cached", False), ("sign-ins, hash in executor", "cached", True)]
    if HASH_ON_LOOP in servers:
        cases.append(("sign-ins, hash on the loop", HASH_ON_LOOP, True))
    for case, key, with_logins in cases:
        base = servers[key].base
        await run_wrk(base + read_path, connections=16, duration_s=plan.warmup_s, threads=threads, cpus=cpus)
        for run_no in range(1, plan.runs + 1):
            reads_run = run_wrk(
                base + read_path,
                connections=plan.blocking_connections,
                duration_s=plan.blocking_duration_s,
                threads=threads,
                cpus=cpus,
            )
            if with_logins:
                logins_run = run_wrk(
                    base + "/api/users/login",
                    connections=plan.login_connections,
                    duration_s=plan.blocking_duration_s,
                    threads=1,
                    lua=login,
                    cpus=cpus,
                )
                reads, logins = await asyncio.gather(reads_run, logins_run)
            else:
                reads, logins = await reads_run, None
            if logins is not None and (logins.errors or not logins.requests):
                raise RuntimeError(f"{case}: sign-ins failed ({logins}); the comparison would be void")
            sides = results.blocking.setdefault(case, {"reads": [], "logins": []})
            sides["reads"].append(asdict(reads))
            if logins is not None:
                sides["logins"].append(asdict(logins))
            log(
                f"blocking {case:28s} run {run_no} reads {reads.requests_per_s:8.0f} req/s "
                f"p99 {reads.p99_ms:8.2f} ms; sign-ins "
                + (f"{logins.requests_per_s:.1f}/s errors {logins.errors}" if logins else "none")
            )


# ---------------------------------------------------------------------------- rendering


def _rps(result: WrkResult | None) -> str:
    return f"{result.requests_per_s:,.0f}" if result else "—"


def _p99(result: WrkResult | None) -> str:
    return f"{result.p99_ms:.1f}" if result else "—"


def _ratio(a: WrkResult | None, b: WrkResult | None) -> str:
    if a is None or b is None or b.requests_per_s == 0:
        return "—"
    return f"{a.requests_per_s / b.requests_per_s:.2f}x"


def write_plots(results: Results, out: Path) -> dict[str, str]:
    """The PNGs of :data:`PLOTS`, written to ``out``; returns :data:`PLOTS`."""
    panels_rps: dict[str, dict[str, list[tuple[int, float]]]] = {}
    panels_p99: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for endpoint, label in ENDPOINTS.items():
        rps: dict[str, list[tuple[int, float]]] = {}
        p99: dict[str, list[tuple[int, float]]] = {}
        for key, server_label in SERVERS.items():
            for connections in results.connections:
                cell = results.cell(endpoint, key, connections)
                if cell is not None:
                    rps.setdefault(server_label, []).append((connections, cell.requests_per_s))
                    p99.setdefault(server_label, []).append((connections, cell.p99_ms))
        panels_rps[label] = rps
        panels_p99[label] = p99
    plot_vs_connections(
        panels_rps,
        out / PLOTS["throughput"],
        title="Throughput vs connections",
        ylabel="requests/s",
    )
    plot_vs_connections(
        panels_p99,
        out / PLOTS["p99"],
        title="p99 latency vs connections",
        ylabel="p99 (ms)",
        log_y=True,
    )
    return PLOTS


def render(results: Results, plots: dict[str, str] | None = None) -> str:
    """The markdown section for BENCHMARKS.md (and results.md)."""
    plan = results.plan
    seeded = results.seeded
    lines = [
        "## Async vs sync: the blog's article list and article page",
        "",
        f"One run ({results.started}), loopback. One SQLite file seeded through the blog's API "
        f"({seeded['articles']} articles by {seeded['authors']} authors); every server reads it with the "
        "same SQL and returns the same JSON (checked before measuring). Each server is **one process "
        "pinned to CPU 0**; wrk runs on the other CPU(s). Each cell is the **median of "
        f"{plan['runs']} runs of {plan['duration_s']} s**, the servers taking turns within each cell. "
        f"Load average (1 min) before/after: {' / '.join(f'{x:.2f}' for x in results.load)}.",
        "",
        "```",
        *(f"{key:8s} {command}" for key, command in results.commands.items()),
        "```",
        "",
    ]
    if results.load and max(results.load) > BUSY_LOAD:
        lines += [
            "**Caution:** other work was running on this machine (load average up to "
            f"{max(results.load):.1f}); it shared CPU 0 with the servers, so absolute numbers are low "
            "and single runs vary. The servers take turns within every cell, so each comparison saw "
            "the same conditions, roughly.",
            "",
        ]
    for endpoint, label in ENDPOINTS.items():
        path = "GET /api/articles?limit=20" if endpoint == "list" else "GET /api/articles/{slug}"
        lines += [f"### {label.capitalize()} (`{path}`)", ""]
        rows = []
        for connections in results.connections:
            sync = results.cell(endpoint, "sync", connections)
            asyn = results.cell(endpoint, "async", connections)
            aio = results.cell(endpoint, "asyncio", connections)
            cached = results.cell(endpoint, "cached", connections)
            rows.append(
                [
                    connections,
                    _rps(sync),
                    _rps(asyn),
                    _ratio(asyn, sync),
                    _p99(sync),
                    _p99(asyn),
                    _rps(aio),
                    _ratio(asyn, aio),
                    _p99(aio),
                    _rps(cached),
                    _p99(cached),
                ]
            )
        lines += table(
            [
                "connections",
                "sync req/s",
                "async req/s",
                "async/sync",
                "sync p99 ms",
                "async p99 ms",
                "asyncio-loop req/s",
                "uvloop/asyncio",
                "asyncio-loop p99 ms",
                "cached req/s",
                "cached p99 ms",
            ],
            rows,
        )
        lines.append("")
    lines += [
        "*sync* = Flask under `gunicorn --workers=1 --worker-class=sync`; *async* = the blog with "
        "`BLOG_CACHE_ENABLED=false` on uvloop (both run the SQL on every request); *asyncio-loop* = the same "
        "blog with `EVENT_LOOP=asyncio`; *cached* = the blog as deployed (Redis + in-process cache).",
        "",
    ]
    errors = [
        f"{cell['endpoint']}/{cell['server']}/c={cell['connections']}: {count}"
        for cell in results.grid
        if (count := median_of([WrkResult(**run) for run in cell["runs"]]).errors)
    ]
    lines += [
        ("Errors or timeouts (summed over runs): " + "; ".join(errors))
        if errors
        else "No errors or timeouts in any run.",
        "",
    ]
    if plots:
        lines += [
            f"![throughput vs connections]({plots['throughput']})",
            "",
            f"![p99 vs connections]({plots['p99']})",
            "",
        ]
    lines += _render_blocking(results)
    if results.notes:
        lines += ["", *(f"- {note}" for note in results.notes)]
    return "\n".join(lines).rstrip() + "\n"


def _render_blocking(results: Results) -> list[str]:
    plan = results.plan
    lines = [
        "### The cost of blocking the loop",
        "",
        f"Anonymous reads of the article page (cached blog, {plan['blocking_connections']} connections) for "
        f"{plan['blocking_duration_s']} s, alone and while {plan['login_connections']} connections sign in "
        "(`POST /api/users/login`, Argon2id with the blog's default cost) as fast as they can; median of "
        f"{plan['runs']} runs. {results.seeded.get('hash_cost', '')}",
        "",
    ]
    rows = []
    for case in ("reads alone", "sign-ins, hash in executor", "sign-ins, hash on the loop"):
        reads = results.blocking_median(case, "reads")
        logins = results.blocking_median(case, "logins")
        if reads is None:
            rows.append([case, "TODO", "TODO", "TODO", "TODO", "needs `BLOG_HASH_ON_LOOP=1` in the blog"])
            continue
        rows.append(
            [
                case,
                _rps(reads),
                f"{reads.p50_ms:.1f}",
                f"{reads.p99_ms:.1f}",
                f"{logins.requests_per_s:.1f}" if logins else "—",
                str(reads.errors + (logins.errors if logins else 0)),
            ]
        )
    lines += table(["case", "reads req/s", "reads p50 ms", "reads p99 ms", "sign-ins/s", "errors"], rows)
    return lines


# A ratio inside 1 ± this is called "on par": runs on a shared machine differ by about that much.
PAR = 0.10


def _ratios(results: Results, endpoint: str, top: str, bottom: str) -> dict[int, float]:
    """``top``'s throughput over ``bottom``'s, per connection count measured for both."""
    out = {}
    for connections in results.connections:
        a, b = results.cell(endpoint, top, connections), results.cell(endpoint, bottom, connections)
        if a and b and b.requests_per_s:
            out[connections] = a.requests_per_s / b.requests_per_s
    return out


def _where(ratios: dict[int, float], ahead: str, behind: str) -> str:
    """ "ahead at 16, 64; behind at 1; on par at 256" from throughput ratios."""
    groups = {
        ahead: [c for c, r in ratios.items() if r >= 1 + PAR],
        behind: [c for c, r in ratios.items() if r <= 1 - PAR],
        "on par": [c for c, r in ratios.items() if 1 - PAR < r < 1 + PAR],
    }
    return "; ".join(
        f"{name} at {', '.join(map(str, counts))} connection{'s' if counts != [1] else ''}"
        for name, counts in groups.items()
        if counts
    )


def _series(values: dict[int, float], fmt: str) -> str:
    return " / ".join(format(value, fmt) for value in values.values())


def findings(results: Results) -> list[str]:
    """What the numbers say, each sentence carrying its numbers (for "When async helps, when it hurts")."""
    out: list[str] = []
    for endpoint, label in ENDPOINTS.items():
        ratios = _ratios(results, endpoint, "async", "sync")
        if not ratios:
            continue
        p99 = {
            server: {
                c: cell.p99_ms for c in ratios if (cell := results.cell(endpoint, server, c)) is not None
            }
            for server in ("async", "sync")
        }
        # sync p99 / async p99: above 1 means async answers its slowest requests sooner.
        tails = {
            c: p99["sync"][c] / p99["async"][c] for c in ratios if p99["async"].get(c) and c in p99["sync"]
        }
        out.append(
            f"**{label.capitalize()}, same SQL on every request** — async/sync throughput "
            f"{_series(ratios, '.2f')} at {' / '.join(map(str, ratios))} connections; p99 async "
            f"{_series(p99['async'], '.1f')} ms vs sync {_series(p99['sync'], '.1f')} ms. "
            f"Throughput: async {_where(ratios, 'ahead', 'behind')}. "
            f"p99: async {_where(tails, 'lower', 'higher')}."
        )
    for endpoint, label in ENDPOINTS.items():
        cache = _ratios(results, endpoint, "cached", "async")
        if cache:
            out.append(
                f"**{label.capitalize()}, cache on** — {min(cache.values()):.1f}-{max(cache.values()):.1f}x "
                "the throughput of the same async service running the SQL each time."
            )
    loop = {
        f"{endpoint}/{c}": r
        for endpoint in ENDPOINTS
        for c, r in _ratios(results, endpoint, "async", "asyncio").items()
    }
    if loop:
        median = statistics.median(loop.values())
        verdict = (
            "within the run-to-run noise"
            if abs(median - 1) < PAR
            else f"uvloop {'ahead' if median > 1 else 'behind'} by {abs(median - 1):.0%}"
        )
        out.append(
            f"**uvloop vs the asyncio loop** (cache off, both endpoints, every connection count) — "
            f"uvloop/asyncio {min(loop.values()):.2f}-{max(loop.values()):.2f}x, median {median:.2f}x: "
            f"{verdict}. Here the time goes to SQLite, JSON and the middlewares, not to the loop itself."
        )
    out += _blocking_findings(results)
    return out


def _blocking_findings(results: Results) -> list[str]:
    alone = results.blocking_median("reads alone", "reads")
    executor = results.blocking_median("sign-ins, hash in executor", "reads")
    on_loop = results.blocking_median("sign-ins, hash on the loop", "reads")
    if not (alone and executor):
        return []
    out = [
        f"**Sign-ins beside reads, hash in the executor** — reads p99 {alone.p99_ms:.1f} ms alone, "
        f"{executor.p99_ms:.1f} ms with sign-ins; throughput {alone.requests_per_s:,.0f} → "
        f"{executor.requests_per_s:,.0f} req/s. Off the loop no read waits for a whole hash, but the hash "
        "threads (Argon2 computes its lanes in parallel) share the process's one core with the loop."
    ]
    if on_loop:
        out.append(
            f"**Hash on the loop** — reads p99 {on_loop.p99_ms:.1f} ms "
            f"({on_loop.p99_ms / max(executor.p99_ms, 0.001):.0f}x the executor's p99), "
            f"{on_loop.requests_per_s:,.0f} req/s: every read waits behind whole hashes."
        )
    return out


# ---------------------------------------------------------------------------- the run


@contextlib.asynccontextmanager
async def running(servers: Sequence[Server]) -> AsyncIterator[None]:
    """Start ``servers`` one after another (the first migrates the file); stop them all on exit."""
    started: list[Server] = []
    try:
        for server in servers:
            await server.process.start(timeout=60)
            started.append(server)
        yield
    finally:
        for server in reversed(started):
            await server.process.stop(timeout=10)


def _hash_cost() -> str:
    """One Argon2id hash at the blog's default cost, timed here (what each sign-in spends)."""
    from argon2 import PasswordHasher

    defaults = BlogSettings.model_fields
    hasher = PasswordHasher(
        time_cost=defaults["blog_argon2_time_cost"].default,
        memory_cost=defaults["blog_argon2_memory_kib"].default,
        parallelism=defaults["blog_argon2_parallelism"].default,
    )
    encoded = hasher.hash("x")
    began = time.perf_counter()
    hasher.verify(encoded, "x")
    return f"One verification costs {1000 * (time.perf_counter() - began):.0f} ms here."


def _wrk_command(plan: Plan) -> str:
    """wrk's command line as run, with the connection counts spelled as a set."""
    cpus = load_cpus()
    most = max(plan.connections)
    argv = wrk_argv(
        "http://127.0.0.1:PORT/PATH", connections=most, duration_s=plan.duration_s, threads=len(cpus or {0})
    )
    pin = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
    counts = ",".join(map(str, plan.connections))
    return " ".join(pin + argv).replace(f"-c{most}", f"-c{{{counts}}}")


async def bench(plan: Plan) -> Results:
    stop_on_sigterm()
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="bench-blog-") as tmp:
        db = Path(tmp) / "blog.db"
        cached = _blog_server("cached", db, prefix, cache=True, loop="uvloop")
        grid = {
            "sync": _sync_server(db),
            "async": _blog_server("async", db, prefix, cache=False, loop="uvloop"),
            "asyncio": _blog_server("asyncio", db, prefix, cache=False, loop="asyncio"),
            "cached": cached,
        }
        extra = []
        notes = []
        if hash_on_loop_supported():
            extra.append(_blog_server(HASH_ON_LOOP, db, prefix, cache=True, loop="uvloop", hash_on_loop=True))
        else:
            notes.append(
                "TODO: the blog has no `BLOG_HASH_ON_LOOP` switch yet: the hash-on-the-loop row is missing."
            )
        try:
            async with running([cached]):
                log(f"seeding {plan.articles} articles through the blog's API …")
                seeded = await seed(cached.base, plan, rng)
                async with running([s for k, s in grid.items() if k != "cached"] + extra):
                    urls = paths(seeded)
                    await check_same_json(list(grid.values()), urls)
                    commands = {server.key: server.command for server in [*grid.values(), *extra]}
                    commands["wrk"] = _wrk_command(plan)
                    results = Results(
                        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                        plan=asdict(plan),
                        commands=commands,
                        seeded={**asdict(seeded), "hash_cost": _hash_cost()},
                        notes=notes,
                    )
                    results.load.append(os.getloadavg()[0])
                    await measure_grid(results, grid, urls, plan)
                    servers = {s.key: s for s in [*grid.values(), *extra]}
                    await measure_blocking(results, servers, urls["page"], seeded, plan)
                    results.load.append(os.getloadavg()[0])
        finally:
            await drop_prefix(prefix)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 s runs, fewer articles (about 3 minutes instead of 8)"
    )
    parser.add_argument(
        "--out", type=Path, help="report directory (default loadtests/reports/bench-<timestamp>)"
    )
    parser.add_argument("--runs", type=int, help="runs per cell (default 3)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 3, --quick 1)")
    args = parser.parse_args(argv)
    plan = QUICK_PLAN if args.quick else DEFAULT_PLAN
    if args.runs is not None:
        plan = replace(plan, runs=args.runs)
    if args.duration is not None:
        plan = replace(plan, duration_s=args.duration)
    if not (1 <= plan.runs <= 20 and 1 <= plan.duration_s <= 60):
        parser.error("need 1 <= --runs <= 20 and 1 <= --duration <= 60")
    out: Path = args.out or REPORTS / f"bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(bench(plan))
    plots = write_plots(results, out)
    markdown = render(results, plots)
    (out / "results.json").write_text(results.to_json())
    (out / "results.md").write_text(markdown)
    print(markdown)
    log(f"written to {out}")


if __name__ == "__main__":
    main()
