"""The one way the benchmarks drive ``wrk`` (the Debian package, ``/usr/bin/wrk``) and read its numbers.

:func:`run_wrk` runs ``wrk -t T -c C -d D --timeout … --latency URL`` as a subprocess with a hard
deadline and returns a :class:`WrkResult`; :func:`parse` turns wrk's text into one (tested on real
output); :func:`median_of` folds repeated runs into the figure a table shows. Requests other than a
plain GET (a sign-in POST with a JSON body) go through a small Lua script, :func:`request_script`.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WRK", "WrkResult", "median_of", "parse", "request_script", "run_wrk", "wrk_argv", "wrk_version"]

WRK = "/usr/bin/wrk"
# wrk needs a moment beyond -d to start threads and print; anything past this margin is a hang.
DEADLINE_MARGIN_S = 15.0

_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run (or the median of several, see :func:`median_of`) measured."""

    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    # Responses with status >= 400 (wrk calls them "Non-2xx or 3xx responses").
    http_errors: int = 0
    socket_errors: int = 0  # connect + read + write
    timeouts: int = 0  # requests unanswered within --timeout; wrk leaves them out of the latencies

    @property
    def errors(self) -> int:
        return self.http_errors + self.socket_errors + self.timeouts


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if found is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(found.group(1)) * _TO_MS[found.group(2)]


def _percentile(output: str, percent: int) -> float:
    found = re.search(rf"^\s+{percent}%\s+(\S+)\s*$", output, re.M)
    if found is None:
        raise ValueError(f"no {percent}% line in wrk output (was --latency given?):\n{output}")
    return _ms(found.group(1))


def parse(output: str) -> WrkResult:
    """The numbers of ``wrk --latency`` text; ``ValueError`` if it is not such text."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)\s*$", output, re.M)
    total = re.search(r"^\s+(\d+) requests in ", output, re.M)
    if rps is None or total is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    http_errors = re.search(r"^\s+Non-2xx or 3xx responses:\s+(\d+)", output, re.M)
    sockets = re.search(
        r"^\s+Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output, re.M
    )
    connect, read, write, timeouts = (int(n) for n in sockets.groups()) if sockets else (0, 0, 0, 0)
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        p50_ms=_percentile(output, 50),
        p90_ms=_percentile(output, 90),
        p99_ms=_percentile(output, 99),
        requests=int(total.group(1)),
        http_errors=int(http_errors.group(1)) if http_errors else 0,
        socket_errors=connect + read + write,
        timeouts=timeouts,
    )


def median_of(runs: Sequence[WrkResult]) -> WrkResult:
    """Each rate and percentile is the median over ``runs``; counts are summed (an error is never lost)."""
    if not runs:
        raise ValueError("median_of needs at least one run")

    def median(field: str) -> float:
        return float(statistics.median(getattr(run, field) for run in runs))

    return WrkResult(
        requests_per_s=median("requests_per_s"),
        p50_ms=median("p50_ms"),
        p90_ms=median("p90_ms"),
        p99_ms=median("p99_ms"),
        requests=sum(run.requests for run in runs),
        http_errors=sum(run.http_errors for run in runs),
        socket_errors=sum(run.socket_errors for run in runs),
        timeouts=sum(run.timeouts for run in runs),
    )


def _lua_string(text: str) -> str:
    """``text`` as a double-quoted Lua literal: printable ASCII as is, every other byte as ``\\ddd``."""
    return (
        '"'
        + "".join(
            chr(byte) if 32 <= byte < 127 and byte not in (34, 92) else f"\\{byte:03d}"
            for byte in text.encode()
        )
        + '"'
    )


def request_script(method: str, body: str = "", headers: Mapping[str, str] | None = None) -> str:
    """A wrk Lua script that sends every request as ``method`` with ``body`` and ``headers``."""
    lines = [f"wrk.method = {_lua_string(method)}"]
    if body:
        lines.append(f"wrk.body = {_lua_string(body)}")
    for name, value in (headers or {}).items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    return "\n".join(lines) + "\n"


def wrk_argv(
    url: str,
    *,
    connections: int,
    duration_s: int,
    threads: int = 2,
    timeout_s: int = 5,
    headers: Mapping[str, str] | None = None,
    script: Path | None = None,
) -> list[str]:
    """The exact command line (reports print it). wrk takes whole seconds, and no more threads than
    connections."""
    argv = [
        WRK,
        f"-t{max(1, min(threads, connections))}",
        f"-c{connections}",
        f"-d{duration_s}s",
        f"--timeout={timeout_s}s",
        "--latency",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script is not None:
        argv += ["-s", str(script)]
    return [*argv, url]


async def run_wrk(
    url: str,
    *,
    connections: int,
    duration_s: int,
    threads: int = 2,
    timeout_s: int = 5,
    headers: Mapping[str, str] | None = None,
    lua: str | None = None,
    cpus: set[int] | None = None,
) -> WrkResult:
    """One wrk run against ``url``; killed and ``TimeoutError`` if it outlives its duration + margin.

    ``lua`` is a script's text (see :func:`request_script`); ``cpus`` pins wrk (and its threads) so
    the load generator does not compete with the server it measures.
    """
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        script = None
        if lua is not None:
            script = Path(tmp) / "request.lua"
            script.write_text(lua)
        argv = wrk_argv(
            url,
            connections=connections,
            duration_s=duration_s,
            threads=threads,
            timeout_s=timeout_s,
            headers=headers,
            script=script,
        )
        if cpus:
            argv = ["taskset", "-c", ",".join(str(cpu) for cpu in sorted(cpus)), *argv]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(duration_s + DEADLINE_MARGIN_S):
                out, _ = await proc.communicate()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{text}")
    return parse(text)


def wrk_version() -> str:
    """``debian/4.1.0-3+b2`` or so: wrk prints it on ``-v`` (and exits 1)."""
    out = subprocess.run([WRK, "-v"], capture_output=True, text=True, timeout=10, check=False).stdout
    found = re.search(r"^wrk (\S+)", out, re.M)
    return found.group(1) if found else "unknown"
