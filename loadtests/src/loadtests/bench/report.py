"""Run every benchmark and write ``BENCHMARKS.md`` at the repository root.

``python -m loadtests.bench.report [--quick]`` runs each bench module (``asynccore_red``, ``blog``,
``orders``, ``stream``, ``async_vs_sync``) as its own subprocess, one after another so they
never share the CPUs, each under a deadline (SIGINT, so it stops the servers it started; SIGKILL if it
does not exit). A module prints its markdown on stdout and its progress on stderr (passed through);
``--quick`` and ``--out DIR`` are passed to the modules whose ``--help`` offers them, and PNGs a module
writes to its ``--out`` directory are copied under ``docs/bench/<module>/`` with the links rewritten.

``BENCHMARKS.md`` gets: the machine (CPU, cores, RAM, kernel, Python, library and wrk versions, commit),
the exact commands, every module's tables and plots, and "When async helps, when it hurts", stated
from the async-vs-sync numbers. A module that fails or overruns leaves a visible FAILED section, and
the command exits 1 after writing everything else.

``--from DIR`` renders a saved report again without measuring; with ``--again MODULE`` (repeatable) it
first measures those modules again into it (after a change to one service, say), and their sections
say when and on which commit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from loadtests.bench.async_vs_sync import PLOTS, Results, findings, render
from loadtests.bench.wrk import wrk_version

__all__ = ["BenchRun", "machine", "main", "publish_plots", "render_benchmarks", "run_module"]

ROOT = Path(__file__).resolve().parents[4]
REPORTS = ROOT / "loadtests" / "reports"
DOCS = Path("docs") / "bench"  # relative to ROOT: BENCHMARKS.md links it as is
RUNS_FILE = "runs.json"  # what ran, for --from

# (module, title), in the order they run and appear.
MODULES = [
    ("asynccore_red", "asynccore: what the edge costs"),
    ("blog", "Blog: cache, ceiling and churn"),
    ("orders", "Orders"),
    ("stream", "Stream"),
    ("async_vs_sync", "Async vs sync"),
]
TIMEOUT_S = {False: 30 * 60, True: 8 * 60}  # per module: full run / --quick
# stream's last round lets faust-streaming count the whole 1M backlog once (~20 min at ~840 events/s)
FULL_TIMEOUT_S = {"stream": 75 * 60}


def deadline(module: str, *, quick: bool) -> float:
    """Seconds ``module`` may run before it is stopped."""
    return TIMEOUT_S[True] if quick else FULL_TIMEOUT_S.get(module, TIMEOUT_S[False])


STOP_GRACE_S = 30.0
PACKAGES = ["aiohttp", "uvloop", "aiosqlite", "redis", "orjson", "gunicorn", "flask", "argon2-cffi"]


@dataclass
class BenchRun:
    module: str
    title: str
    command: str
    markdown: str
    ok: bool
    detail: str = ""  # why it failed
    seconds: float = 0.0
    remeasured: str = ""  # when and on which commit, if run again after the rest (``--again``)


def _options(module: str) -> str:
    """The module's ``--help`` text ("" if it has none), to see which flags it takes."""
    done = subprocess.run(
        [sys.executable, "-m", f"loadtests.bench.{module}", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout if done.returncode == 0 else ""


def _bench_env() -> dict[str, str]:
    # `make` exports PYTHONASYNCIODEBUG=1 for tests; debug mode would dominate any benchmark.
    return {**os.environ, "PYTHONASYNCIODEBUG": ""}


async def run_module(module: str, title: str, *, quick: bool, out: Path, timeout_s: float) -> BenchRun:
    """One bench module as a subprocess under a deadline; its stdout is the markdown."""
    options = _options(module)
    argv = [sys.executable, "-m", f"loadtests.bench.{module}"]
    if quick and "--quick" in options:
        argv.append("--quick")
    module_out = out / module
    if "--out" in options:
        module_out.mkdir(parents=True, exist_ok=True)
        argv += ["--out", str(module_out)]
    shown = " ".join(["uv run python", *argv[1:]]).replace(str(ROOT) + "/", "")
    print(f"== {shown}", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    began = loop.time()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,  # progress lines go straight to the terminal
        env=_bench_env(),
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout_s):
            stdout, _ = await proc.communicate()
    except TimeoutError:
        await _stop(proc)
        return BenchRun(
            module, title, shown, "", False, f"timed out after {timeout_s:.0f} s", loop.time() - began
        )
    markdown = stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        return BenchRun(
            module, title, shown, markdown, False, f"exit status {proc.returncode}", loop.time() - began
        )
    return BenchRun(module, title, shown, markdown, True, seconds=loop.time() - began)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGINT first: the module's ``finally`` blocks stop the servers it started."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        async with asyncio.timeout(STOP_GRACE_S):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def publish_plots(run: BenchRun, module_out: Path, root: Path = ROOT) -> None:
    """Copy the PNGs the module linked into ``<root>/docs/bench/<module>/`` and point its links there."""
    target = root / DOCS / run.module

    def relink(match: re.Match[str]) -> str:
        name = match.group(2)
        source = module_out / name
        if "/" in name or not source.is_file():
            return match.group(0)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / name)
        return f"{match.group(1)}({(DOCS / run.module / name).as_posix()})"

    run.markdown = re.sub(r"(!\[[^\]]*\])\(([^)\s]+\.png)\)", relink, run.markdown)


# ---------------------------------------------------------------------------- the machine


def _first(path: str, pattern: str) -> str:
    with contextlib.suppress(OSError):
        found = re.search(pattern, Path(path).read_text(), re.M)
        if found:
            return found.group(1).strip()
    return "unknown"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.stdout.strip() or "unknown"


def machine() -> list[tuple[str, str]]:
    """What the numbers were measured on, as (what, value) rows."""
    mem_kib = _first("/proc/meminfo", r"^MemTotal:\s+(\d+) kB")
    ram = f"{int(mem_kib) / 1024 / 1024:.1f} GiB" if mem_kib.isdigit() else "unknown"
    return [
        ("CPU", _first("/proc/cpuinfo", r"^model name\s*:\s*(.+)$")),
        ("CPUs (online / usable here)", f"{os.cpu_count()} / {len(os.sched_getaffinity(0))}"),
        ("RAM", ram),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("SQLite", sqlite3.sqlite_version),
        ("wrk", wrk_version()),
        *((package, _version(package)) for package in PACKAGES),
        ("commit", _commit()),
    ]


# ---------------------------------------------------------------------------- BENCHMARKS.md


def when_async_helps(results: Results | None) -> list[str]:
    lines = ["## When async helps, when it hurts", ""]
    if results is None:
        return [*lines, "TODO: the async-vs-sync benchmark did not run; no numbers to state.", ""]
    lines += [f"- {sentence}" for sentence in findings(results)]
    lines += [
        "",
        "Why, in short. Each server had one core. A gunicorn sync worker serves one request at a time and "
        "closes the connection after each response (sync workers cannot keep idle connections open), so "
        "under concurrency clients wait in the listen backlog and every request pays a new TCP connection; "
        "the event loop keeps every connection open and overlaps SQLite calls (in aiosqlite's threads) "
        "with parsing and writing other requests. When a request is almost all CPU — the article-list "
        "statement runs the tag subquery and a sort over *every* article to compute `COUNT(*) OVER ()` — "
        "there is little to overlap, and the async stack's extra work per request (middlewares, a thread "
        "hop per query) is plain cost. A CPU-bound call made on the loop (a password hash) stalls every "
        "connection of the process; in a thread it only competes for the core.",
        "",
    ]
    return lines


def render_benchmarks(
    runs: list[BenchRun],
    results: Results | None,
    *,
    quick: bool,
    started: str,
    machine_rows: Sequence[Sequence[str]],
) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {started} on the machine below, loopback only, by `uv run python -m "
        f"loadtests.bench.report{' --quick' if quick else ''}` (`make bench-report`), which runs each "
        "benchmark below as its own process, one at a time. Every table is a median of repeated runs; "
        "each section says how it was measured. Re-run to reproduce; numbers from another machine differ.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {what} | {value} |" for what, value in machine_rows),
        "",
        "Commands, in the order they ran:",
        "",
        "```",
        *(run.command for run in runs),
        "```",
        "",
    ]
    lines += when_async_helps(results)
    for run in runs:
        body = run.markdown
        if not body.startswith("## "):
            body = f"## {run.title}\n\n{body}"
        if not run.ok:
            body = f"## {run.title}: FAILED ({run.detail})\n\n" + (run.markdown or "No output.")
        again = f"; measured again {run.remeasured}" if run.remeasured else ""
        lines += [body.rstrip(), "", f"<sub>`{run.command}` — {run.seconds:.0f} s{again}</sub>", ""]
    return "\n".join(lines).rstrip() + "\n"


async def run_all(quick: bool, out: Path) -> list[BenchRun]:
    runs = []
    for module, title in MODULES:
        run = await run_module(module, title, quick=quick, out=out, timeout_s=deadline(module, quick=quick))
        publish_plots(run, out / module)
        (out / f"{module}.md").write_text(run.markdown + "\n")
        runs.append(run)
    return runs


async def run_again(runs: list[BenchRun], modules: list[str], quick: bool, out: Path) -> list[BenchRun]:
    """``runs`` (a saved report's) with ``modules`` measured again into ``out``, each saying when."""
    again = {run.module: run for run in runs}
    for module, title in MODULES:
        if module in modules:
            stamp = f"{datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')} on commit {_commit()}"
            run = await run_module(
                module, title, quick=quick, out=out, timeout_s=deadline(module, quick=quick)
            )
            run.remeasured = stamp
            publish_plots(run, out / module)
            (out / f"{module}.md").write_text(run.markdown + "\n")
            again[module] = run
    return [again[module] for module, _ in MODULES if module in again]


def _results(out: Path) -> Results | None:
    path = out / "async_vs_sync" / "results.json"
    return Results.from_json(path.read_text()) if path.is_file() else None


def rerender(out: Path) -> tuple[list[BenchRun], dict[str, Any]]:
    """A saved report directory's runs, with the async-vs-sync section rendered again from its numbers.

    For wording changes without measuring again: every number comes from ``out``.
    """
    saved = json.loads((out / RUNS_FILE).read_text())
    runs = [BenchRun(**run) for run in saved.pop("runs")]
    results = _results(out)
    for run in runs:
        if run.module == "async_vs_sync" and run.ok and results is not None:
            run.markdown = render(results, PLOTS)
            publish_plots(run, out / run.module)
    return runs, saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every bench that takes it")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="default: BENCHMARKS.md")
    parser.add_argument(
        "--from", dest="source", type=Path, help="re-render a saved report directory, no runs"
    )
    parser.add_argument(
        "--again",
        action="append",
        default=[],
        choices=[module for module, _ in MODULES],
        help="with --from: measure this module again into that report (repeatable); its section says when",
    )
    args = parser.parse_args(argv)
    if args.again and not args.source:
        parser.error("--again needs --from DIR (the report to measure into)")
    if args.source:
        out = args.source
        runs, saved = rerender(out)
        if args.again:
            runs = asyncio.run(run_again(runs, args.again, saved.get("quick", args.quick), out))
            kept = {**saved, "runs": [asdict(run) for run in runs]}
            (out / RUNS_FILE).write_text(json.dumps(kept, indent=1))
    else:
        started = datetime.now().astimezone()
        out = REPORTS / f"bench-report-{started.strftime('%Y%m%d-%H%M%S')}"
        out.mkdir(parents=True, exist_ok=True)
        saved = {
            "started": started.strftime("%Y-%m-%d %H:%M %Z"),
            "quick": args.quick,
            "machine_rows": machine(),
        }
        runs = asyncio.run(run_all(args.quick, out))
        (out / RUNS_FILE).write_text(json.dumps({**saved, "runs": [asdict(run) for run in runs]}, indent=1))
    text = render_benchmarks(runs, _results(out), **saved)
    args.output.write_text(text)
    (out / "BENCHMARKS.md").write_text(text)
    print(text)
    print(f"written {args.output} (and a copy in {out})", file=sys.stderr)
    if not all(run.ok for run in runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
