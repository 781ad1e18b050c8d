"""The blog bench's signed-in reads: the wrk script against a real server and the real wrk, and the
issue-19 rows of the report."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from aiohttp import web

from asynccore.testing import free_port
from loadtests.bench.blog import Bursts, Readers, report, signed_in_script, signed_ratios, write_tokens
from loadtests.bench.wrk import WrkResult, run_wrk


async def test_every_request_carries_the_next_readers_token(tmp_path: Path) -> None:
    """wrk with ``signed_in.lua`` sends the URL's method and path, each request with one of the tokens,
    all of them in turn; a token file whose path needs escaping in Lua is read all the same."""
    tokens = [f"tok{i:03d}.payload.sig" for i in range(50)]
    tokens_file = tmp_path / 'tokens "of" readers.txt'
    write_tokens(tokens_file, tokens)
    seen: Counter[str] = Counter()
    paths: Counter[str] = Counter()

    async def handler(request: web.Request) -> web.Response:
        seen[request.headers.get("Authorization", "")] += 1
        paths[f"{request.method} {request.path_qs}"] += 1
        return web.Response(text="{}")

    app = web.Application()
    app.router.add_get("/api/articles", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        result = await run_wrk(
            f"http://127.0.0.1:{port}/api/articles?limit=20",
            connections=4,
            duration_s=1,
            lua=signed_in_script(tokens_file),
        )
    finally:
        await runner.cleanup()
    assert result.errors == 0 and result.requests > 200
    assert set(paths) == {"GET /api/articles?limit=20"}
    assert set(seen) == {f"Token {token}" for token in tokens}
    # In turn: no reader is sent much more often than another (each wrk thread walks the list).
    assert max(seen.values()) - min(seen.values()) <= 4


def _result(rps: float, p99_ms: float) -> WrkResult:
    return WrkResult(requests_per_s=rps, p50_ms=1.0, p90_ms=2.0, p99_ms=p99_ms, requests=int(rps))


def test_the_report_states_the_signed_in_targets(tmp_path: Path) -> None:
    """Round by round ratios, their median against 50 %, and p99 against 20 ms, marked met or not."""
    runs = {
        ("list", "cached"): [_result(1000, 5), _result(800, 6), _result(1200, 5)],
        ("list", "signed"): [_result(600, 9), _result(300, 30), _result(700, 8)],
        ("article", "cached"): [_result(1000, 5)],
        ("article", "signed"): [_result(200, 25)],
    }
    assert signed_ratios(runs, "list") == [0.6, 0.375, 700 / 1200]
    args = argparse.Namespace(connections=64, duration=10, warmup=2, rounds=3, articles=200, soak_s=0)
    readers = Readers(
        tmp_path / "tokens.txt", ["a", "b", "c", "d"], 1, 9, list_overlaid=2, article_overlaid=1
    )
    text = report(args, runs, None, None, None, readers)
    assert (
        "| list: signed-in cached / anonymous cached (issue 19; median of rounds: 0.60, 0.38, 0.58) " in text
    )
    assert "| 0.58 | >= 0.50 | yes |" in text
    assert "| list: signed-in cached p99 (issue 19) | 9.00 ms | < 20 ms | yes |" in text
    assert "| 0.20 | >= 0.50 | **NO** |" in text
    assert "| article: signed-in cached p99 (issue 19) | 25.00 ms | < 20 ms | **NO** |" in text
    assert "50 % of the list reads and 25 % of the article reads" in text


def test_the_report_sets_the_backends_side_by_side() -> None:
    """Issue 20: both uncached backends in the table, and MariaDB over SQLite round by round (context)."""
    runs = {
        ("list", "uncached"): [_result(100, 50), _result(80, 60)],
        ("list", "uncached-mariadb"): [_result(50, 90), _result(60, 80)],
        ("article", "uncached"): [_result(600, 10)],
        ("article", "uncached-mariadb"): [_result(300, 20)],
    }
    args = argparse.Namespace(connections=64, duration=10, warmup=2, rounds=2, articles=200, soak_s=0)
    text = report(args, runs, None, None, None)
    assert "| `/api/articles` | blog, cache disabled (SQLite) | 90 |" in text
    assert "| `/api/articles` | blog, cache disabled (MariaDB) | 55 |" in text
    assert (
        "| list: uncached MariaDB / uncached SQLite (issue 20, context; rounds: 0.50, 0.75) | 0.62 |" in text
    )
    assert "| article: uncached MariaDB / uncached SQLite (issue 20, context; rounds: 0.50) | 0.50 |" in text


def test_the_report_gives_both_cold_key_bursts() -> None:
    """After a write the burst must cost 1 query; after an expiry it is context (one per replica + a fill)."""
    runs = {("list", "cached"): [_result(1000, 5)]}
    args = argparse.Namespace(connections=64, duration=10, warmup=2, rounds=1, articles=200, soak_s=0)
    burst = "| 200-reader cold-key burst on 2 replicas, cold after a write: database queries"
    text = report(args, runs, _result(900, 6), Bursts(written=1, expired=3), None)
    assert f"{burst} | 1 | 1 | yes |" in text
    assert "cold after its version expired" in text and "| 3 |  | — |" in text
    text = report(args, runs, _result(900, 6), Bursts(written=2, expired=3), None)
    assert f"{burst} | 2 | 1 | **NO** |" in text
