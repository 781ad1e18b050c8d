"""Run one locust scenario headless and bounded, then hold it to its SLOs.

``python -m loadtests.run blog [--smoke] [--host URL]`` reads ``loadtests/scenarios/blog.toml``, runs
locust with its settings (or the smaller ``[smoke]`` ones), writes locust's CSV and HTML report to
``loadtests/reports/<scenario>-<timestamp>/`` and exits non-zero when an SLO is missed or the scenario's
own checks (e.g. no oversell) failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from loadtests import slo

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
LOCUSTFILES = Path(__file__).resolve().parent / "scenarios"
REPORTS = ROOT / "reports"
GRACE_S = 60  # seeding, spawn and stop time on top of the run time


def seconds(run_time: str) -> int:
    """Locust's run-time syntax (``90``, ``90s``, ``1m30s``, ``1h``) in seconds."""
    if run_time.isdigit():
        return int(run_time)
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", run_time)
    if not parts:
        raise ValueError(f"bad run-time {run_time!r}")
    return sum(int(n) * units[u] for n, u in parts)


def load_scenario(name: str) -> dict[str, Any]:
    path = SCENARIOS / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.toml")))
        raise SystemExit(f"unknown scenario {name!r}; known: {known}")
    with path.open("rb") as handle:
        return tomllib.load(handle)


def run(name: str, *, smoke: bool, host: str | None) -> int:
    config = load_scenario(name)
    load: dict[str, Any] = dict(config["locust"])
    if smoke:
        load.update(config.get("smoke", {}))
    host = host or os.environ.get("LOAD_HOST") or load["host"]
    out = REPORTS / f"{name}{'-smoke' if smoke else ''}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "locust", "--headless", "--only-summary",
        "-f", str(LOCUSTFILES / f"{name}.py"),
        "--host", host,
        "--users", str(load["users"]),
        "--spawn-rate", str(load["spawn-rate"]),
        "--run-time", str(load["run-time"]),
        "--stop-timeout", "5",
        "--csv", str(out / name),
        "--html", str(out / "report.html"),
        "--exit-code-on-error", "0",
    ]  # fmt: skip
    print(f"{name}: {load['users']} users for {load['run-time']} against {host} → {out}", flush=True)
    budget = seconds(str(load["run-time"])) + GRACE_S
    try:
        locust = subprocess.run(argv, timeout=budget, check=False)
    except subprocess.TimeoutExpired:
        print(f"{name}: locust did not stop within {budget}s", file=sys.stderr)
        return 3
    stats = slo.read_stats(out / f"{name}_stats.csv")
    objectives = dict(config.get("slo", {}))
    if smoke:
        # A few users for seconds give a few dozen samples per endpoint on a shared machine: their p95
        # is printed, not judged (performance is measured by `make load` and the benchmarks). A smoke
        # run still fails on errors, and on an endpoint that was never requested.
        objectives["endpoints"] = {key: {} for key in objectives.get("endpoints", {})}
    breaches = slo.check(stats, objectives)
    for row in stats.values():
        latency = f"p95={row.p95_ms:g}ms p99={row.p99_ms:g}ms"
        print(f"  {row.key:<40} n={row.requests:<7} fail={row.failures:<5} {latency}")
    for breach in breaches:
        print(f"  {breach}", file=sys.stderr)
    if locust.returncode != 0:
        print(f"{name}: scenario checks failed (locust exit {locust.returncode})", file=sys.stderr)
    ok = not breaches and locust.returncode == 0
    verdict = f"{name}: {'SLOs met' if ok else 'FAILED'}; report {out / 'report.html'}"
    print(verdict)
    # The verdict beside locust's HTML and CSV, so a report folder says whether the run passed.
    lines = [verdict, *(str(breach) for breach in breaches)]
    if locust.returncode != 0:
        lines.append(f"scenario checks failed (locust exit {locust.returncode})")
    (out / "verdict.txt").write_text("\n".join(lines) + "\n")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario")
    parser.add_argument("--smoke", action="store_true", help="a few users for a few seconds")
    parser.add_argument("--host", help="base URL (default: the scenario's, or $LOAD_HOST)")
    args = parser.parse_args(argv)
    raise SystemExit(run(args.scenario, smoke=args.smoke, host=args.host))


if __name__ == "__main__":
    main()
