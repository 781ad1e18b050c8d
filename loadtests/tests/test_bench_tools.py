"""The benchmark tools against real servers and the real wrk: parser, runner, baseline, report.

wrk runs for 1 s at a time on loopback against small aiohttp/asyncio servers started in the test, so
every parsed number is checked against what the server itself saw.
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, replace
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from asynccore.testing import ServiceProcess, free_port
from loadtests.bench import async_vs_sync as avs
from loadtests.bench import sync_baseline
from loadtests.bench.report import BenchRun, machine, publish_plots, render_benchmarks
from loadtests.bench.wrk import WrkResult, median_of, parse, request_script, run_wrk, wrk_argv

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def counting_server() -> AsyncIterator[tuple[str, dict[str, int]]]:
    """``/ok`` answers at once, ``/slow`` after 20 ms, ``/fail`` with 500; ``seen`` counts per path."""
    seen: dict[str, int] = {}

    async def handler(request: web.Request) -> web.Response:
        seen[request.path] = seen.get(request.path, 0) + 1
        if request.path == "/slow":
            await asyncio.sleep(0.02)
        return web.Response(text="x", status=500 if request.path == "/fail" else 200)

    runner, base = await serve(handler)
    yield base, seen
    await runner.cleanup()


async def wrk_text(url: str, connections: int = 4) -> str:
    proc = await asyncio.create_subprocess_exec(
        *wrk_argv(url, connections=connections, duration_s=1, threads=1),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(20):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_parser_reads_real_wrk_output(counting_server: tuple[str, dict[str, int]]) -> None:
    base, seen = counting_server
    text = await wrk_text(base + "/ok")
    result = parse(text)
    assert "Latency Distribution" in text
    # wrk counts the responses it got back; the server may have answered a few it stopped waiting for.
    assert 0 < result.requests <= seen["/ok"]
    assert result.requests_per_s == pytest.approx(result.requests / 1.0, rel=0.3)
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms < 1000
    assert result.errors == 0


async def test_latencies_are_converted_to_milliseconds(counting_server: tuple[str, dict[str, int]]) -> None:
    base, _ = counting_server
    slow = await run_wrk(base + "/slow", connections=2, duration_s=1, threads=1)
    # The handler sleeps 20 ms: a parser that mixed up us/ms/s would be off by 1000x.
    assert 20 <= slow.p50_ms <= slow.p99_ms < 1000
    assert 0 < slow.requests_per_s <= 2 / 0.02


async def test_error_statuses_are_counted(counting_server: tuple[str, dict[str, int]]) -> None:
    base, _ = counting_server
    result = await run_wrk(base + "/fail", connections=2, duration_s=1, threads=1)
    assert result.requests > 0
    assert result.http_errors == result.requests
    assert result.socket_errors == result.timeouts == 0


async def test_socket_errors_are_counted() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        text = await wrk_text(f"http://127.0.0.1:{port}/", connections=2)
    finally:
        server.close()
        await server.wait_closed()
    result = parse(text)
    assert "Socket errors" in text
    assert result.requests == 0
    assert result.socket_errors > 0
    assert result.errors == result.socket_errors


async def test_lua_script_sends_method_body_and_headers() -> None:
    seen: set[tuple[str, bytes, str | None, str | None]] = set()

    async def record(request: web.Request) -> web.Response:
        seen.add((request.method, await request.read(), request.content_type, request.headers.get("X-Run")))
        return web.Response(text="ok")

    runner, base = await serve(record)
    run_id = uuid.uuid4().hex
    # Quotes, a backslash, non-ASCII and a newline: everything a naive Lua literal would break on.
    body = orjson.dumps({"user": {"email": 'a"b\\c@exämple.com', "password": "p]]w\nx"}}).decode()
    try:
        script = request_script("POST", body, {"Content-Type": "application/json", "X-Run": run_id})
        result = await run_wrk(base + "/login", connections=1, duration_s=1, lua=script)
    finally:
        await runner.cleanup()
    assert result.requests > 0 and result.errors == 0
    assert seen == {("POST", body.encode(), "application/json", run_id)}


async def test_wrk_failure_raises() -> None:
    with pytest.raises(RuntimeError, match="unable to connect"):
        await run_wrk(f"http://127.0.0.1:{free_port()}/", connections=1, duration_s=1)


def test_median_of_takes_medians_and_sums_errors() -> None:
    runs = [
        WrkResult(100.0, 1.0, 2.0, 9.0, 100, http_errors=1),
        WrkResult(300.0, 3.0, 4.0, 3.0, 300, socket_errors=2),
        WrkResult(200.0, 2.0, 3.0, 5.0, 200, timeouts=3),
    ]
    assert median_of(runs) == WrkResult(200.0, 2.0, 3.0, 5.0, 600, 1, 2, 3)
    assert median_of(runs).errors == 6
    with pytest.raises(ValueError):
        median_of([])


def test_wrk_argv_never_asks_for_more_threads_than_connections() -> None:
    argv = wrk_argv("http://127.0.0.1:1/x", connections=1, duration_s=2, threads=4, headers={"A": "b"})
    assert argv[1:6] == ["-t1", "-c1", "-d2s", "--timeout=5s", "--latency"]
    assert argv[-3:] == ["-H", "A: b", "http://127.0.0.1:1/x"]


# ---------------------------------------------------------------------------- the baseline vs the blog


LIGHT_ARGON2 = {"BLOG_ARGON2_TIME_COST": "1", "BLOG_ARGON2_MEMORY_KIB": "8", "BLOG_ARGON2_PARALLELISM": "1"}


async def test_sync_baseline_answers_exactly_like_the_blog(tmp_path: Path) -> None:
    """Seeded through the blog's API, both servers return the same JSON for the benchmarked reads."""
    db = tmp_path / "blog.db"
    prefix = f"test-bench-{uuid.uuid4().hex[:12]}"
    blog_port, sync_port = free_port(), free_port()
    env = avs.blog_env(blog_port, db, prefix, cache=False, loop="asyncio", hash_on_loop=False)
    blog = ServiceProcess(
        [sys.executable, "-m", "blog"],
        env={**env, **LIGHT_ARGON2},
        health_url=f"http://127.0.0.1:{blog_port}/healthz",
        name="test-blog",
    )
    baseline = ServiceProcess(
        sync_baseline.gunicorn_argv(sync_port, workers=1),
        env={"BLOG_DB_PATH": str(db)},
        health_url=f"http://127.0.0.1:{sync_port}/healthz",
        name="test-sync-baseline",
    )
    plan = replace(avs.QUICK_PLAN, articles=25, authors=2)
    try:
        await blog.start(timeout=60)
        seeded = await avs.seed(f"http://127.0.0.1:{blog_port}", plan, random.Random(1))
        await baseline.start(timeout=60)
        servers = [
            avs.Server("async", blog, f"http://127.0.0.1:{blog_port}", ""),
            avs.Server("sync", baseline, f"http://127.0.0.1:{sync_port}", ""),
        ]
        paths = {
            **avs.paths(seeded),
            "second page": "/api/articles?limit=10&offset=20",
            "past the end": "/api/articles?offset=500",
        }
        await avs.check_same_json(servers, paths)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{sync_port}/api/articles?limit=20") as resp:
                listed = await resp.json()
            async with session.get(f"http://127.0.0.1:{sync_port}/api/articles/no-such-slug") as resp:
                assert resp.status == 404
            async with session.get(f"http://127.0.0.1:{sync_port}/api/articles?limit=101") as resp:
                assert resp.status == 422
                assert "limit" in (await resp.json())["errors"]
        assert listed["articlesCount"] == 25 and len(listed["articles"]) == 20
        assert "body" not in listed["articles"][0]
    finally:
        await baseline.stop()
        await blog.stop()
        await avs.drop_prefix(prefix)


async def test_event_loop_switch_runs_the_stdlib_loop() -> None:
    """``EVENT_LOOP=asyncio`` makes asynccore.app.run serve on the stdlib loop (the benchmark's A/B)."""
    code = (
        "import asyncio\n"
        "from aiohttp import web\n"
        "from asynccore.app import add_routes, create_app, run\n"
        "from asynccore.settings import ServiceSettings, load_settings\n"
        "async def loop(request):\n"
        "    return web.Response(text=type(asyncio.get_running_loop()).__module__)\n"
        "app = create_app('looptest', load_settings(ServiceSettings))\n"
        "add_routes(app, [web.get('/loop', loop)])\n"
        "import sys; run(app, int(sys.argv[1]), host='127.0.0.1')\n"
    )
    seen = {}
    for choice in ("asyncio", "uvloop"):
        port = free_port()
        process = ServiceProcess(
            [sys.executable, "-c", code, str(port)],
            env={"EVENT_LOOP": choice},
            health_url=f"http://127.0.0.1:{port}/healthz",
            name=f"loop-{choice}",
        )
        await process.start(timeout=30)
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/loop") as resp,
            ):
                seen[choice] = await resp.text()
        finally:
            await process.stop()
    assert seen["asyncio"].startswith("asyncio")
    assert seen["uvloop"].startswith("uvloop")


# ---------------------------------------------------------------------------- rendering


def sample_results(*, with_on_loop: bool) -> avs.Results:
    results = avs.Results(
        started="2025-01-01 00:00 UTC",
        plan={**asdict(avs.QUICK_PLAN)},
        commands={"sync": "gunicorn …", "wrk": "wrk …"},
        seeded={"articles": 200, "authors": 4, "hash_cost": "One verification costs 100 ms here."},
        load=[0.1, 0.2],
    )
    rates = {"sync": 1000.0, "async": 2000.0, "asyncio": 1600.0, "cached": 8000.0}
    for endpoint in avs.ENDPOINTS:
        for connections in (1, 16):
            for server, rate in rates.items():
                for factor in (0.9, 1.0, 1.1):
                    p99 = connections * 1000 / rate
                    results.add(endpoint, server, connections, WrkResult(rate * factor, 1.0, 2.0, p99, 100))
    cases = ["reads alone", "sign-ins, hash in executor"] + (
        ["sign-ins, hash on the loop"] if with_on_loop else []
    )
    for n, case in enumerate(cases):
        reads = WrkResult(5000.0 / (n + 1), 1.0, 2.0, 5.0 * 10**n, 100)
        logins = [asdict(WrkResult(10.0, 100.0, 150.0, 200.0, 20))] if n else []
        results.blocking[case] = {"reads": [asdict(reads)] * 3, "logins": logins}
    return results


def test_render_tables_findings_and_plots(tmp_path: Path) -> None:
    results = avs.Results.from_json(sample_results(with_on_loop=True).to_json())  # survives JSON
    plots = avs.write_plots(results, tmp_path)
    for name in plots.values():
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    text = avs.render(results, plots)
    assert "| 16 | 1,000 | 2,000 | 2.00x |" in text
    assert "No errors or timeouts in any run." in text
    assert "| sign-ins, hash on the loop | 1,667 | 1.0 | 500.0 | 10.0 | 0 |" in text
    said = " ".join(avs.findings(results))
    assert "async/sync throughput 2.00 / 2.00 at 1 / 16 connections" in said
    assert "Throughput: async ahead at 1, 16 connections. p99: async lower at 1, 16 connections." in said
    assert "uvloop ahead by 25%" in said
    assert "10x the executor's p99" in said


def test_missing_hash_switch_leaves_a_todo_row() -> None:
    text = avs.render(sample_results(with_on_loop=False))
    assert "| sign-ins, hash on the loop | TODO |" in text


def test_benchmarks_md_links_published_plots(tmp_path: Path) -> None:
    module_out = tmp_path / "out"
    module_out.mkdir()
    (module_out / "chart.png").write_bytes(b"\x89PNG fake")
    run = BenchRun("async_vs_sync", "Async vs sync", "uv run …", "## Async\n\n![chart](chart.png)\n", True)
    publish_plots(run, module_out, root=tmp_path)
    assert (tmp_path / "docs/bench/async_vs_sync/chart.png").read_bytes() == b"\x89PNG fake"
    failed = BenchRun("orders", "Orders", "uv run … orders", "", False, "timed out after 360 s")
    text = render_benchmarks(
        [run, failed], sample_results(with_on_loop=True), quick=True, started="now", machine_rows=machine()
    )
    assert "![chart](docs/bench/async_vs_sync/chart.png)" in text
    assert "## Orders: FAILED (timed out after 360 s)" in text
    assert "## When async helps, when it hurts" in text and "| CPU |" in text


def test_a_module_measured_again_says_when() -> None:
    first = BenchRun("orders", "Orders", "uv run … orders", "## Orders\n\nfigures\n", True, seconds=60)
    again = BenchRun(
        "stream",
        "Stream",
        "uv run … stream",
        "## Stream\n\nfigures\n",
        True,
        seconds=90,
        remeasured="2026-12-07 16:40 UTC on commit abc1234",
    )
    text = render_benchmarks([first, again], None, quick=False, started="now", machine_rows=machine())
    assert "<sub>`uv run … orders` — 60 s</sub>" in text
    assert "— 90 s; measured again 2026-12-07 16:40 UTC on commit abc1234</sub>" in text
