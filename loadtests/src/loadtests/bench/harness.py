"""What every benchmark shares, so that each one reads as its own measurements.

* servers: :func:`serve_routes` is a server process's side (bare aiohttp, or asynccore's edge);
  :func:`start_server` starts a real process quiet (asyncio debug off, warnings only), waits
  until it answers and pins it to :data:`SERVER_CPU`; :func:`load_cpus` are the CPUs left for wrk and
  other load generators, so a server never competes with its own load.
* processes: :func:`cpu_seconds` and :func:`rss_mib` read ``/proc``; :class:`Memory` holds RSS samples
  (:func:`sample_rss` takes them) and says whether they stayed flat.
* wrk: :func:`measure` is a warm-up run, then the measured one (:mod:`loadtests.bench.wrk` runs wrk).
* rounds: :func:`interleaved` orders the variants A/B/C, A/B/C … so drift in the machine hits all of
  them alike; :func:`median` and :func:`spread` fold the rounds into the figure a table shows.
* reports: :func:`table` writes a markdown table; :func:`log` writes progress to stderr (stdout is the
  report); :func:`delete_keys` removes what a run wrote to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web
from redis.asyncio import Redis

from asynccore.testing import ServiceProcess
from loadtests.bench.wrk import WrkResult, run_wrk

# Debug mode (which `make` exports for tests) and chatty logs would dominate what is measured.
QUIET_ENV = {"PYTHONASYNCIODEBUG": "", "LOG_LEVEL": "WARNING"}
SERVER_CPU = 0
# "Memory flat": RSS at the end at most this much above RSS after warm-up.
FLAT = 0.10

V = TypeVar("V")


def log(message: str) -> None:
    """Progress for the terminal; stdout carries only the report."""
    print(message, file=sys.stderr, flush=True)


def stop_on_sigterm() -> None:
    """SIGTERM (``timeout``, a supervisor) cancels the running task, so its ``finally`` blocks stop the
    servers it started, as SIGINT does."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


# ---------------------------------------------------------------------------- CPUs and servers


def _can_pin(pin: bool) -> bool:
    return pin and len(os.sched_getaffinity(0)) >= 2


def server_cpus(pin: bool = True) -> set[int] | None:
    """The servers' CPU (``None``: not pinned, on a one-CPU machine or when asked not to)."""
    return {SERVER_CPU} if _can_pin(pin) else None


def load_cpus(pin: bool = True) -> set[int] | None:
    """The CPUs the load generators may use: every one but the servers' (``None``: not pinned)."""
    return os.sched_getaffinity(0) - {SERVER_CPU} if _can_pin(pin) else None


def pinned(argv: list[str], cpus: set[int] | None) -> list[str]:
    """``argv`` under ``taskset``: the process, its threads and the workers it forks run on ``cpus``."""
    return ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv] if cpus else argv


def local_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


async def start_server(
    argv: list[str],
    *,
    env: dict[str, str],
    health_url: str,
    name: str,
    cpus: set[int] | None = None,
    start_timeout_s: float = 60.0,
) -> ServiceProcess:
    """A started server process (quiet, see :data:`QUIET_ENV`) that answered ``health_url``.

    ``cpus`` pins its main thread once it answers; a server that forks workers should be started
    under :func:`pinned` instead, so they inherit it.
    """
    process = ServiceProcess(argv, env={**QUIET_ENV, **env}, health_url=health_url, name=name)
    await process.start(timeout=start_timeout_s)
    if cpus and process.pid is not None:
        os.sched_setaffinity(process.pid, cpus)
    return process


def serve_routes(routes: list[web.RouteDef], port: int, *, edge: str | None = None) -> None:
    """Serve ``routes`` on loopback in this process until SIGTERM (the server side of a benchmark that
    starts itself with ``--serve``): on a bare aiohttp app, or behind asynccore's whole edge
    (``create_app`` named ``edge``). Both on uvloop, as in production."""
    if edge is None:
        import uvloop

        app = web.Application()
        app.router.add_routes(routes)
        web.run_app(
            app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
        )
        return
    from asynccore.app import add_routes, create_app, run
    from asynccore.settings import ServiceSettings, load_settings

    service = create_app(edge, load_settings(ServiceSettings))
    add_routes(service, routes)
    run(service, port, host="127.0.0.1")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used, from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """The resident set of ``pid`` in MiB (0 if ``/proc`` does not say)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Memory:
    """RSS samples over a run, taken at a steady interval. Flat means the end (the last 10 % of the
    samples) is within :data:`FLAT` of the level after warm-up (10-20 % of the samples)."""

    samples: list[float] = field(default_factory=list)

    def _window(self, start: float, end: float) -> float:
        n = len(self.samples)
        return statistics.median(self.samples[int(n * start) : max(int(n * start) + 1, int(n * end))])

    @property
    def warm(self) -> float:
        return self._window(0.1, 0.2)

    @property
    def end(self) -> float:
        return self._window(0.9, 1.0)

    @property
    def growth(self) -> float:
        return self.end / self.warm - 1

    @property
    def flat(self) -> bool:
        return len(self.samples) >= 10 and self.growth <= FLAT

    def summary(self) -> str:
        if len(self.samples) < 10:
            return "n/a (too few samples)"
        return (
            f"{min(self.samples):.0f}-{max(self.samples):.0f} MiB; after warm-up "
            f"{self.warm:.0f}, at the end {self.end:.0f} ({self.growth * 100:+.1f} %)"
        )


async def sample_rss(pid: int, memory: Memory, stop: asyncio.Event, interval_s: float = 0.25) -> None:
    """Append ``pid``'s RSS to ``memory`` every ``interval_s`` until ``stop`` is set."""
    while not stop.is_set():
        with contextlib.suppress(OSError):
            memory.samples.append(rss_mib(pid))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):
                await stop.wait()


# ---------------------------------------------------------------------------- wrk and rounds


async def measure(
    url: str,
    *,
    warmup_s: int,
    duration_s: int,
    connections: int,
    threads: int = 2,
    timeout_s: int = 5,
    cpus: set[int] | None = None,
) -> WrkResult:
    """A warm-up run (its numbers dropped) and then the measured run, with the same wrk options."""
    for seconds in (warmup_s, duration_s) if warmup_s > 0 else (duration_s,):
        result = await run_wrk(
            url, connections=connections, duration_s=seconds, threads=threads, timeout_s=timeout_s, cpus=cpus
        )
    return result


def interleaved(rounds: int, variants: Iterable[V], *, alternate: bool = False) -> Iterator[tuple[int, V]]:
    """(round, variant) for rounds 1…``rounds``, every variant once a round in the given order;
    ``alternate`` reverses every second round (A/B, B/A, …) so that no variant always goes first."""
    order = list(variants)
    for round_no in range(1, rounds + 1):
        reverse = alternate and round_no % 2 == 0
        for variant in reversed(order) if reverse else order:
            yield round_no, variant


def median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """The median, then min-max in brackets: the noise between rounds."""
    med = fmt.format(statistics.median(values))
    return med if len(values) < 2 else f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


# ---------------------------------------------------------------------------- reports


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """A markdown table's lines. ``align`` has a letter a column, ``l`` or ``r``; by default the first
    column is left-aligned and the others right-aligned (they hold numbers)."""
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError(f"{len(headers)} columns, alignment {align!r}")

    def row(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    rule = "|" + "|".join("---:" if side == "r" else "---" for side in align) + "|"
    return [row(headers), rule, *(row(cells) for cells in rows)]


async def delete_keys(redis: Redis, pattern: str) -> None:
    """Delete every key matching ``pattern`` (a run's prefix), in batches."""
    keys = [key async for key in redis.scan_iter(match=pattern, count=1000)]
    for start in range(0, len(keys), 1000):
        await redis.delete(*keys[start : start + 1000])
