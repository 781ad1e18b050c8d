"""Schemathesis against a real service process: run its CLI, read back every request it sent.

The CLI (not the pytest plugin) because it runs all phases — coverage (boundary values, wrong types,
missing fields), fuzzing (positive and negative bodies) and stateful (create → read → change → delete
along inferred links) — in a process of its own that a hard timeout can kill. Its NDJSON report holds
every interaction, so a failure names the exact request and response.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CHECKS", "Failure", "FuzzReport", "run_schemathesis"]

# What "conforms to the documented schema" means here; "no 5xx" is never configured away.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
SEED = 20240611
# Settings every run shares; a service's own TOML goes between the two (top-level keys before tables).
COMMON_KEYS = """
# Every test case runs, so one operation can show several distinct failures.
continue-on-failure = true
request-timeout = 10.0
"""
COMMON_TABLES = """
[cache]
# Nothing learned in an earlier run steers this one: the same seed sends the same requests.
enabled = false

[phases.stateful]
max-steps = {stateful_steps}
"""
_BODY_PREVIEW = 600
STATEFUL_LABEL = "Stateful tests"


@dataclass(frozen=True)
class Failure:
    """One failed check, with the request that caused it and what came back."""

    operation: str
    check: str
    title: str
    message: str
    url: str
    request: str  # as a curl command line
    status: int | None
    response: str

    def describe(self) -> str:
        got = f"{self.status} {self.response}" if self.status is not None else self.response
        return (
            f"{self.operation}: {self.title} [{self.check}]\n  {self.request}\n  -> {got}\n  {self.message}"
        )


@dataclass
class FuzzReport:
    """What one schemathesis run sent and found."""

    name: str
    elapsed_s: float
    requests: Counter[str] = field(default_factory=Counter)  # "METHOD /path" -> requests sent
    statuses: Counter[tuple[str, int | None]] = field(default_factory=Counter)  # (operation, status) -> n
    failures: list[Failure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # schemathesis could not test (network, schema …)
    output: str = ""

    def of(self, *checks: str) -> list[Failure]:
        return [f for f in self.failures if f.check in checks]

    def locked_out(self) -> list[str]:
        """Operations that never got past authentication (the credentials did not reach them)."""
        answered: dict[str, set[int | None]] = {}
        for operation, status in self.statuses:
            answered.setdefault(operation, set()).add(status)
        return sorted(op for op, seen in answered.items() if seen <= {401, 403})

    def summary(self) -> str:
        ops = ", ".join(f"{op}: {n}" for op, n in sorted(self.requests.items()))
        return (
            f"{self.name}: {len(self.requests)} operations, {sum(self.requests.values())} requests, "
            f"{len(self.failures)} failures, {len(self.errors)} errors in {self.elapsed_s:.1f}s\n  {ops}"
        )

    def describe(self, failures: list[Failure] | None = None) -> str:
        shown = self.failures if failures is None else failures
        lines = [self.summary(), *(f.describe() for f in shown), *self.errors]
        return "\n".join(lines)


async def run_schemathesis(
    name: str,
    location: str,
    base_url: str,
    *,
    workdir: Path,
    config: str = "",
    env: dict[str, str] | None = None,
    max_examples: int = 50,
    stateful_steps: int = 10,
    timeout_s: float = 90.0,
) -> FuzzReport:
    """Run ``schemathesis run`` against ``base_url`` and parse its NDJSON report.

    ``config`` is TOML added to the common settings; it may name ``${VARS}`` from ``env`` (how tokens
    reach it without being written to disk). The run is killed after ``timeout_s``, which fails it.
    """
    argv, ndjson = _prepare(workdir, location, base_url, config, max_examples, stateful_steps)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workdir,  # hypothesis and schemathesis write nothing into the repository
        env={**os.environ, **(env or {}), "NO_COLOR": "1", "COLUMNS": "120"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise AssertionError(f"schemathesis against {name} did not finish within {timeout_s:g}s") from None
    report = FuzzReport(name=name, elapsed_s=time.monotonic() - started, output=out.decode(errors="replace"))
    _read_report(ndjson, proc.returncode, report)
    return report


def _prepare(
    workdir: Path, location: str, base_url: str, config: str, max_examples: int, stateful_steps: int
) -> tuple[list[str], Path]:
    """Write the config file; the command line and where its NDJSON report will be."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "schemathesis.toml"
    config_path.write_text(COMMON_KEYS + config + COMMON_TABLES.format(stateful_steps=stateful_steps))
    ndjson = workdir / "events.ndjson"
    argv = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config_path), "run", location),
        *("--url", base_url, "--checks", ",".join(CHECKS)),
        *("--max-examples", str(max_examples), "--seed", str(SEED), "--generation-deterministic"),
        # Unmasked, so a failure shows the exact request (a query parameter named "author" would be
        # masked as a credential); the one real secret, Authorization, is masked below instead.
        *("--workers", "1", "--no-color", "--output-sanitize", "false"),
        *("--report", "ndjson", "--report-ndjson-path", str(ndjson)),
    ]
    return argv, ndjson


def _read_report(ndjson: Path, returncode: int | None, report: FuzzReport) -> None:
    if not ndjson.exists():
        raise AssertionError(f"schemathesis wrote no report (exit {returncode}):\n{report.output[-4000:]}")
    for line in ndjson.read_text().splitlines():
        _read_event(json.loads(line), report)
    if returncode not in (0, 1) and not report.errors:  # 1: failures found, reported above
        report.errors.append(f"schemathesis exited with {returncode}:\n{report.output[-4000:]}")


def _read_event(event: dict[str, Any], report: FuzzReport) -> None:
    kind, body = next(iter(event.items()))
    if kind in ("NonFatalError", "FatalError"):
        error = body.get("value") or body.get("exception") or body
        report.errors.append(f"{body.get('label', kind)}: {error}")
    elif kind == "ScenarioFinished":
        _read_scenario(body["recorder"], report)


def _read_scenario(recorder: dict[str, Any], report: FuzzReport) -> None:
    cases = recorder.get("cases", {})
    for case_id, interaction in recorder.get("interactions", {}).items():
        operation = recorder["label"]
        if operation == STATEFUL_LABEL:  # a scenario of several operations: count each step's own
            case = cases.get(case_id, {}).get("value", {})
            operation = f"{case.get('method', '?')} {case.get('path', '?')}"
        response = interaction.get("response") or {}
        report.requests[operation] += 1
        report.statuses[operation, response.get("status_code")] += 1
        for check in recorder.get("checks", {}).get(case_id, []):
            if check["status"] != "failure":
                continue
            failure = check["failure_info"]["failure"]
            report.failures.append(
                Failure(
                    operation=failure.get("operation") or operation,
                    check=check["name"],
                    title=failure.get("title", ""),
                    message=failure.get("message", "").strip(),
                    url=interaction["request"]["uri"],
                    request=_request_line(interaction["request"]),
                    status=response.get("status_code"),
                    response=_decode(response.get("content")) if response else "(no response)",
                )
            )


def _request_line(request: dict[str, Any]) -> str:
    """The request as a curl command line, credentials masked."""
    parts = ["curl", "-X", request["method"]]
    for name, values in request.get("headers", {}).items():
        for value in values:
            shown = f"{value.partition(' ')[0]} ***" if name.lower() == "authorization" else value
            parts += ["-H", f"{name}: {shown}"]
    body = _decode(request.get("body"))
    if body:
        parts += ["--data-raw", body]
    parts.append(request["uri"])
    return shlex.join(parts)


def _decode(payload: dict[str, str] | None) -> str:
    if not payload:
        return ""
    raw = base64.b64decode(payload["$base64"]) if "$base64" in payload else str(payload).encode()
    text = raw.decode(errors="replace")
    return text if len(text) <= _BODY_PREVIEW else f"{text[:_BODY_PREVIEW]}… ({len(raw)} bytes)"
