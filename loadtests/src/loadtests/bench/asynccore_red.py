"""What asynccore's edge costs per request, and what RED costs inside it, measured.

``python -m loadtests.bench.asynccore_red [--quick]`` starts four real server processes on free
loopback ports, each serving one trivial handler: a bare aiohttp app; the same handler inside one
empty wrapper (the *layer*: the coroutine frame the edge is, since asynccore wraps every handler at
registration); the same wrapper timing the request into RED metrics exactly as the edge does
(:class:`asynccore.metrics.RouteRed`, ``perf_counter`` around the handler); and the handler
registered with ``add_routes`` inside ``create_app``, behind the whole edge (RED, request id,
errors, deadline, in-flight). All run on uvloop with asyncio debug mode off, as in production.
``wrk --latency`` drives them in turn, A/B/C/D/A/B/C/D…, so drift in the machine hits all alike,
and the medians over rounds go into a markdown table (stdout; progress on stderr) with the
throughput ratios. Target (issue 2): recording RED costs at most 5 % of throughput (red/layer: RED
where it is recorded, the layer being there anyway). The layer's and the whole edge's ratios to bare
aiohttp are printed beside it, so their price is visible too.

req/s moves with whatever else the machine runs; the server's own CPU time per request (from
``/proc``) barely does, so the table shows both. With two or more CPUs the servers are pinned to
CPU 0 and wrk to the others, so a server never competes with its own load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import sys
from collections.abc import Awaitable, Callable
from time import perf_counter

from aiohttp import web

from asynccore.metrics import RouteRed, red_recorder
from asynccore.testing import ServiceProcess, free_port
from loadtests.bench.harness import (
    cpu_seconds,
    interleaved,
    load_cpus,
    local_url,
    log,
    median,
    serve_routes,
    server_cpus,
    start_server,
    stop_on_sigterm,
    table,
)
from loadtests.bench.wrk import WrkResult, median_of, run_wrk, wrk_argv

ROUTE = "/hello/{name}"
PATH = "/hello/world"
BODY = b'{"hello":"world"}'
VARIANTS = {
    "bare": "bare aiohttp",
    "layer": "bare aiohttp, handler in one empty wrapper",
    "red": "bare aiohttp, handler in a wrapper recording RED",
    "stack": "asynccore edge (add_routes in create_app)",
}
TARGET_LOSS = 0.05
WRK_TIMEOUT_S = 2

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def hello(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


def wrapped(handler: Handler, *, red: bool) -> Handler:
    """``handler`` in one wrapper layer that records RED exactly as the edge does, or does nothing."""
    if not red:

        async def layer(request: web.Request) -> web.StreamResponse:
            return await handler(request)

        return layer
    route_red = RouteRed(red_recorder("bench"), method="GET")

    async def timed(request: web.Request) -> web.StreamResponse:
        started = perf_counter()
        response = await handler(request)
        route_red.observe(request, response.status, perf_counter() - started)
        return response

    return timed


def serve(variant: str, port: int) -> None:
    """Run one server in this process until SIGTERM (the ``--serve`` side of the benchmark)."""
    if variant == "stack":
        serve_routes([web.get(ROUTE, hello)], port, edge="bench")
        return
    handler = hello if variant == "bare" else wrapped(hello, red=variant == "red")
    serve_routes([web.get(ROUTE, handler)], port)


@dataclasses.dataclass(frozen=True)
class Round:
    wrk: WrkResult
    server_cpu_us: float  # server CPU time (user + system) per request served


async def measure(
    url: str, pid: int, args: argparse.Namespace, duration_s: int, cpus: set[int] | None
) -> Round:
    """One wrk run against ``url``, with the CPU time the server spent per request it answered."""
    before = cpu_seconds(pid)
    result = await run_wrk(
        url,
        connections=args.connections,
        duration_s=duration_s,
        threads=args.threads,
        timeout_s=WRK_TIMEOUT_S,
        cpus=cpus,
    )
    return Round(result, (cpu_seconds(pid) - before) * 1e6 / max(result.requests, 1))


def report(rounds: dict[str, list[Round]], args: argparse.Namespace) -> str:
    """The variants' medians as a table, then each comparison's throughput and CPU ratios."""
    wrk = {variant: median_of([r.wrk for r in runs]) for variant, runs in rounds.items()}
    cpu = {variant: median(r.server_cpu_us for r in runs) for variant, runs in rounds.items()}
    command = " ".join(wrk_argv("URL", connections=args.connections, duration_s=args.duration,
                                threads=args.threads, timeout_s=WRK_TIMEOUT_S))  # fmt: skip
    lines = [
        f"`{command}` per variant, {args.rounds} rounds alternating A/B, a fresh server process per "
        "variant and round, medians; "
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"uvloop, asyncio debug off; load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
        "",
        *table(
            ["variant", "req/s", "p50 ms", "p99 ms", "server CPU µs/req", "req/s per round", "errors"],
            [
                [
                    label,
                    f"{wrk[variant].requests_per_s:.0f}",
                    f"{wrk[variant].p50_ms:.2f}",
                    f"{wrk[variant].p99_ms:.2f}",
                    f"{cpu[variant]:.1f}",
                    ", ".join(f"{r.wrk.requests_per_s:.0f}" for r in rounds[variant]),
                    wrk[variant].errors,
                ]
                for variant, label in VARIANTS.items()
            ],
            align="lrrrrlr",
        ),
        "",
    ]
    comparisons = (
        ("red", "layer", "recording RED (in the layer the edge already is)"),
        ("layer", "bare", "one wrapper layer"),
        ("stack", "bare", "the whole asynccore edge"),
    )
    for variant, baseline, what in comparisons:
        ratio = wrk[variant].requests_per_s / wrk[baseline].requests_per_s
        cpu_ratio = cpu[baseline] / cpu[variant]
        if variant == "red":
            verdict = "within" if 1 - ratio <= TARGET_LOSS else "OVER"
            target = f", {verdict} the {100 * TARGET_LOSS:.0f} % target"
        else:
            target = ", for context"
        lines.append(
            f"- {what}: throughput ratio {variant}/{baseline} **{ratio:.3f}** (loss "
            f"{100 * (1 - ratio):.1f} %{target}); by server CPU per request **{cpu_ratio:.3f}** "
            f"({cpu[variant] - cpu[baseline]:+.1f} µs per request)."
        )
    return "\n".join(lines)


async def start_variant(variant: str, cpus: set[int] | None) -> tuple[ServiceProcess, str]:
    port = free_port()
    url = f"{local_url(port)}{PATH}"
    argv = [sys.executable, "-m", "loadtests.bench.asynccore_red", "--serve", variant, "--port", str(port)]
    return await start_server(argv, env={}, health_url=url, name=variant, cpus=cpus, start_timeout_s=30), url


async def bench(args: argparse.Namespace) -> str:
    """Every variant once per round, each round in fresh processes.

    A new process per round because two processes running the same code can differ by a few percent
    in throughput (hash seeds, memory layout); fresh ones per round average that out instead of
    carrying one process's luck through every round.
    """
    stop_on_sigterm()
    cpus, wrk_cpus = server_cpus(not args.no_pin), load_cpus(not args.no_pin)
    rounds: dict[str, list[Round]] = {variant: [] for variant in VARIANTS}
    for round_no, variant in interleaved(args.rounds, VARIANTS):
        process, url = await start_variant(variant, cpus)
        try:
            assert process.pid is not None
            await measure(url, process.pid, args, args.warmup, wrk_cpus)
            result = await measure(url, process.pid, args, args.duration, wrk_cpus)
        finally:
            await process.stop(timeout=10)
        rounds[variant].append(result)
        log(
            f"round {round_no} {variant:5s} {result.wrk.requests_per_s:9.0f} req/s "
            f"p50 {result.wrk.p50_ms:.2f} ms p99 {result.wrk.p99_ms:.2f} ms "
            f"cpu {result.server_cpu_us:.1f} µs/req errors {result.wrk.errors}"
        )
    return report(rounds, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="what asynccore's edge costs vs bare aiohttp (wrk)")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server (default 2)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 s (a smoke run)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and wrk to CPUs")
    parser.add_argument("--serve", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return
    if args.quick:
        args.rounds, args.duration, args.warmup = 3, 3, 1
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 120:
        parser.error("need 1 <= --rounds <= 20 and 1 <= --duration <= 120 (the run must stay bounded)")
    print(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
