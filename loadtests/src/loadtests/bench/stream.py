"""Stream analytics: events/s one process consumes *and* aggregates, against a plain loop, and freshness.

``python -m loadtests.bench.stream`` starts one private Apache Kafka broker for the whole run
(``devservers.kafka_broker.KafkaBroker``: a single KRaft node on loopback, its JMX exporter on) and:

1. pre-produces ``--events`` (default 1,000,000) shop events — the load generator's mix, a few late,
   duplicated and malformed — into a fresh topic of ``--partitions`` partitions, created through the
   admin API (the broker does not create topics on first use), in large producer batches (up to
   1 MB or 1 s per partition: small batches cost every consumer per batch and hid half the plain
   loop's ceiling), tallying per (type, minute) what the alternative apps must count;
2. ``--rounds`` (default 3) interleaved rounds over that same backlog, the order alternating:
   - **plain loop**: a separate process runs an aiokafka ``getmany`` loop that decodes every event
     (msgspec) and counts by type — the Python ceiling on this machine;
   - **stream service**: ``python -m stream`` consumes the topic as a fresh one-member group, maintaining
     every window, HyperLogLog, funnel, recommendation and risk state and flushing each batch to Redis
     with its offsets. Events/s is taken from the offsets it commits to Redis (first to last flush);
     its RSS is sampled over the same span;
   - **Quix Streams 3.x** and **faust-streaming** (``--apps``): each a tumbling one-minute count per
     event type in its documented idiom (``loadtests/altstreams``, its own pinned uv environment),
     its counts checked exactly against the tally; stopped after ``--alt-timeout`` seconds (default 240),
     when its events/s is taken from the progress lines it prints every 10,000 events counted. The
     last round allows ``--alt-last-timeout`` (default 2400) instead, so that a tool too slow for the
     limit (faust-streaming) still counts the whole backlog once and has its counts checked;
   - the service again as it was at the start of issue 19's work (``--baseline-rev``, default
     :data:`START_OF_WORK`: a git worktree of that commit with its own uv environment), or under
     another tree's interpreter (``--baseline PYTHON``): an A/B of the CPU per event in one run, the
     target being half the start's;
   the report gives medians over the rounds, the min-max beside them, the ratios service/plain and
   service/each app (events/s from each process's launch to the last event it counted), and CPU per
   event of the service process (/proc) and of Redis (``INFO cpu`` and ``INFO commandstats``);
3. **freshness**: a fresh topic and service; events are produced at a fixed ``--rate`` (20,000/s) for
   ``--seconds`` (by a producer already connected, as a live one is) while the API's summary count
   is polled every 20 ms. The k-th event is visible when
   the count first reaches k: p50/p99/max of (visible - produced). The rate the producer actually
   achieved (on average and in its slowest second) is reported next to the target.

In every phase the broker JVM's CPU time (``/proc/<pid>/stat``) is read at the start and end of the
measured span: broker CPU-seconds per wall second, and that as a share of the box's cores. Over the
whole run it is checked against the JMX exporter's ``process_cpu_seconds_total``.

Targets (issues 5 and 19): service ≥ 50 % of the plain loop (and ≥ 75,000 events/s), ≥ 6x Quix and
≥ 30x faust, freshness p99 < 1 s, memory flat. Prints markdown on stdout, progress on stderr; every
Redis key it wrote is deleted, and the broker's data dir with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import confluent_kafka
import msgspec
import orjson
from redis.asyncio import Redis

from asynccore.kafka import ensure_topics
from asynccore.testing import ServiceProcess, free_port, wait_until
from devservers.kafka_broker import KafkaBroker, launcher
from loadtests.bench.harness import (
    FLAT,
    QUIET_ENV,
    Memory,
    cpu_seconds,
    delete_keys,
    interleaved,
    local_url,
    log,
    median,
    sample_rss,
    spread,
    start_server,
    stop_on_sigterm,
    table,
)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


# The topics the service produces to (dead letters, risk alerts), as its defaults name and size them:
# created once per broker, so no round depends on which service start creates them.
SERVICE_OUTPUTS = {"events.dlq": 4, "risk.alerts": 4}


def new_topic(broker: KafkaBroker, prefix: str, partitions: int) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name, partitions)  # the admin API: the broker does not create topics on use
    return name


def kafka_version() -> str:
    pom = (launcher().parent / "pom.xml").read_text()
    start = pom.index("<kafka.version>") + len("<kafka.version>")
    return pom[start : pom.index("</kafka.version>", start)]


@dataclass
class BrokerCpu:
    """The broker JVM's CPU time over one measured span."""

    phase: str
    seconds: float  # wall clock
    cpu_seconds: float

    @property
    def cores(self) -> float:
        return self.cpu_seconds / self.seconds if self.seconds else 0.0

    @property
    def share(self) -> float:
        return self.cores / (os.cpu_count() or 1)


REQUEST_LABEL = re.compile(r'[{,]request="([^"]+)"')


async def scrape(port: int) -> dict[str, float]:
    """A Prometheus text page as {series: value} (empty when nothing answers)."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return {}
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                series[name] = float(value)
    return series


async def jmx_cpu_seconds(metrics_port: int) -> float:
    """The broker JVM's ``process_cpu_seconds_total`` from its JMX exporter (NaN when unreadable)."""
    return (await scrape(metrics_port)).get("process_cpu_seconds_total", math.nan)


def broker_requests(series: dict[str, float]) -> dict[str, float]:
    """Requests the broker has answered, by type, from a JMX exporter scrape."""
    found: dict[str, float] = {}
    for name, value in series.items():
        # One series per request version once there are several (the exporter then adds an
        # ``_objectname`` label to tell them apart): summed.
        if name.startswith("kafka_network_requestmetrics_requests_total{") and (
            kind := REQUEST_LABEL.search(name)
        ):
            found[kind[1]] = found.get(kind[1], 0.0) + value
    return found


# --- the plain loop (runs in its own process) ----------------------------------------------------


def plain_loop(bootstrap: str, topic: str, count: int, broker_pid: int) -> None:
    """aiokafka getmany → msgspec decode → count by type; prints a JSON result line.

    The broker's CPU time is read over the same span (first batch to last) as the loop's own."""
    import gc

    import uvloop
    from aiokafka import AIOKafkaConsumer

    from stream.events import Event

    decode = msgspec.json.Decoder(Event).decode
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as the service does

    async def run() -> dict[str, object]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        by_type: Counter[str] = Counter()
        seen = 0
        started = cpu_started = broker_started = 0.0
        try:
            while seen < count:
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                if not started and batch:
                    started, cpu_started = time.perf_counter(), time.process_time()
                    broker_started = cpu_seconds(broker_pid)
                for records in batch.values():
                    seen += len(records)
                    for record in records:
                        try:
                            by_type[decode(record.value).type] += 1
                        except msgspec.DecodeError:
                            by_type["invalid"] += 1
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            done_at = time.time()
            broker_cpu = cpu_seconds(broker_pid) - broker_started
        finally:
            await consumer.stop()
        return {
            "events": seen,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "broker_cpu_seconds": broker_cpu,
            "done_at": done_at,
            "by_type": by_type,
        }

    print(orjson.dumps(uvloop.run(run())).decode())


async def run_plain_loop(bootstrap: str, topic: str, count: int, broker_pid: int) -> dict[str, object]:
    argv = ["-m", "loadtests.bench.stream", "--plain-loop", bootstrap, topic, str(count), str(broker_pid)]
    launched = time.time()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.PIPE, env={**os.environ, **QUIET_ENV}
    )
    async with asyncio.timeout(600):
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"plain loop failed ({proc.returncode})")
    result: dict[str, object] = orjson.loads(out.splitlines()[-1])
    result["wall_from_launch"] = float(cast(float, result["done_at"])) - launched
    return result


# --- the alternative apps: Quix Streams and faust-streaming, in their own pinned environment ------

ALT_PROJECT = Path(__file__).resolve().parents[3] / "altstreams"  # loadtests/altstreams
ROOT = Path(__file__).resolve().parents[4]  # the repository
ALT_APPS = {"quix": "Quix Streams", "faust": "faust-streaming"}
MINUTE_MS = 60_000

Truth = dict[str, dict[str, int]]  # type → minute start (ms, as a string) → events


def countable_key(value: bytes) -> tuple[str, int] | None:
    """(type, minute start) of a value the alternative apps count (``altstreams/counting.py``'s
    predicate: a JSON object with a string ``type`` and an integer ``ts``), else None."""
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    kind, ts = event.get("type"), event.get("ts")
    if not isinstance(kind, str) or type(ts) is not int:
        return None
    return kind, ts - ts % MINUTE_MS


# Compile every module an interpreter can import, as the image does (Dockerfile: UV_COMPILE_BYTECODE=1).
# Here PYTHONDONTWRITEBYTECODE=1 and the environments hold no .pyc: each launch compiled its imports
# from source, ~1.5 s of the service's ~2.1 s start, counted in every tool's events/s from launch.
_COMPILE = (
    "import compileall, os, sys\n"
    "for path in sys.path:\n"
    "    if os.path.isdir(path) and os.access(path, os.W_OK):\n"
    "        compileall.compile_dir(path, quiet=1, workers=0)\n"
)


def compile_bytecode(python: Path | str) -> None:
    """Compile what ``python`` imports (its environment and the workspace sources) to bytecode."""
    # -W ignore: the standard library's own test data is full of deliberate SyntaxWarnings.
    subprocess.run([str(python), "-W", "ignore", "-c", _COMPILE], check=True, stdout=subprocess.DEVNULL)


# Issue 19's first commit: its CPU-per-event target is "at most half of what the same benchmark
# measures at the start of this work, in one run".
START_OF_WORK = "4d919653f332852db407133ef0716eb256e440b3"
CPU_TARGET = 0.5  # process + Redis µs per event, this tree / the start of the work


def synced_python(project: Path, *options: str) -> Path:
    """``project``'s interpreter, its environment synced from its own uv.lock."""
    uv = os.environ.get("UV", "uv")
    subprocess.run([uv, "sync", "--frozen", "--quiet", *options, "--project", str(project)], check=True)
    return project / ".venv" / "bin" / "python"


@contextlib.contextmanager
def tree_python(rev: str) -> Iterator[Path]:
    """The interpreter of ``rev``'s tree: a detached git worktree with its own environment, synced
    from its own uv.lock, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-stream-base-") as parent:
        tree = Path(parent) / "tree"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", "--quiet", str(tree), rev], check=True)
        try:
            yield synced_python(tree, "--all-packages")
        finally:
            subprocess.run([*git, "remove", "--force", str(tree)], check=False)


def alt_python() -> Path:
    """The alternative apps' interpreter, synced from their own uv.lock (faust-streaming pins its own
    aiokafka: it cannot share the services' environment)."""
    return synced_python(ALT_PROJECT)


# faust-streaming counts ~840 events/s here: the whole 1M backlog in ~20 min
ALT_LAST_TIMEOUT_S = 2400.0


def alt_limit(args: argparse.Namespace, round_no: int) -> float:
    """Seconds an alternative app may take in round ``round_no``: ``--alt-timeout``, except in the last
    round, where ``--alt-last-timeout`` lets a slow tool finish once, so its counts are checked."""
    if round_no == args.rounds:
        return float(max(args.alt_timeout, args.alt_last_timeout))
    return float(args.alt_timeout)


@dataclass
class AltRun:
    """One alternative app over the backlog: from its launch to the last event it counted."""

    app: str
    events: int  # records in the backlog (what it read); for a stopped run, the events it counted
    counted: int  # events it counted (valid ones)
    launched_at: float  # epoch seconds
    first_at: float  # its first event counted
    done_at: float  # its last event counted
    cpu_seconds: float  # the process's user + system time, start-up included
    exact: bool  # every (type, minute) count equal to what was produced
    mismatches: int  # (type, minute) cells that differ
    # False: stopped at --alt-timeout, its rate measured over the events it had counted by its last
    # progress line (a partial run), or crashed
    finished: bool = True

    @property
    def wall(self) -> float:
        return self.done_at - self.launched_at

    @property
    def per_s(self) -> float:
        return self.events / self.wall if self.wall > 0 else 0.0

    @property
    def per_s_counting(self) -> float:
        span = self.done_at - self.first_at
        return self.events / span if span > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return 1e6 * self.cpu_seconds / self.events if self.events else 0.0


async def run_alt(
    app: str,
    python: Path,
    bootstrap: str,
    topic: str,
    partitions: int,
    backlog: Backlog,
    timeout_s: float,
) -> AltRun:
    """Run ``app`` (quix | faust) over the backlog as a fresh consumer group; check its counts.

    One that has not counted everything within ``timeout_s`` is killed (a slow tool must not stall the
    whole run): its events/s is then measured over what it had counted by its last progress line."""
    group = f"bench-{app}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix=f"bench-{app}-") as state_dir:
        script = ALT_PROJECT / f"{app}_count.py"
        args = [bootstrap, topic, group, str(backlog.countable)]
        args += [state_dir] if app == "quix" else [str(partitions), state_dir]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        launched_at = time.time()
        proc = await asyncio.create_subprocess_exec(
            str(python), str(script), *args, stdout=asyncio.subprocess.PIPE, env={**os.environ, **QUIET_ENV}
        )
        lines = _AltOutput()
        try:
            async with asyncio.timeout(timeout_s):
                assert proc.stdout is not None
                async for line in proc.stdout:
                    lines.take(line)
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if lines.result is None:  # stopped at the limit, or crashed (faust once lost a changelog leader)
        if proc.returncode not in (0, -9):
            log(f"{app} exited {proc.returncode} without a result")
        counted, first_at, at = lines.progress or (0, launched_at, time.time())
        return AltRun(app, counted, counted, launched_at, first_at, at, cpu, False, -1, finished=False)
    result: dict[str, Any] = orjson.loads(lines.result)
    found: Truth = result["counts"]
    cells = {(k, m) for k, minutes in found.items() for m in minutes}
    cells |= {(k, m) for k, minutes in backlog.truth.items() for m in minutes}
    mismatches = sum(found.get(k, {}).get(m, 0) != backlog.truth.get(k, {}).get(m, 0) for k, m in cells)
    return AltRun(
        app,
        backlog.events,
        int(result["counted"]),
        launched_at,
        float(result["first_at"]),
        float(result["done_at"]),
        cpu,
        mismatches == 0 and int(result["counted"]) == backlog.countable,
        mismatches,
    )


class _AltOutput:
    """What an alternative app printed: its last progress line and its result line."""

    def __init__(self) -> None:
        self.progress: tuple[int, float, float] | None = None  # (counted, first counted at, at)
        self.result: bytes | None = None

    def take(self, line: bytes) -> None:
        # faust's worker writes its spinner's terminal codes (b"\x1b[?25l\x08\x1b[?25h") to stdout,
        # ahead of whatever the app prints first.
        line = line[max(0, line.find(b"{")) :]
        if line.startswith(b'{"counted"'):
            self.result = line
        elif line.startswith(b'{"progress"'):
            seen = orjson.loads(line)
            self.progress = (int(seen["progress"]), float(seen["first_at"]), float(seen["at"]))


# --- the stream service --------------------------------------------------------------------------


@dataclass
class Service:
    proc: ServiceProcess
    port: int
    prefix: str
    topic: str


async def start_service(bootstrap: str, topic: str, partitions: int, python: str = sys.executable) -> Service:
    port = free_port()
    prefix = f"bench-stream:{uuid.uuid4().hex[:8]}:"
    env = {
        "KAFKA_BOOTSTRAP": bootstrap,
        "REDIS_URL": REDIS_URL,
        "STREAM_TOPIC": topic,
        "STREAM_PARTITIONS": str(partitions),  # the topic exists already: its own creation is a no-op
        "STREAM_PORT": str(port),
        "STREAM_REDIS_PREFIX": prefix,
        "STREAM_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        # Required secrets; the benchmark feeds Kafka directly and never uses them.
        "STREAM_INGEST_TOKEN": secrets.token_urlsafe(32),
        "STREAM_ADMIN_TOKEN": secrets.token_urlsafe(32),
    }
    argv = [python, "-m", "stream"]
    proc = await start_server(argv, env=env, health_url=f"{local_url(port)}/readyz", name="stream")
    return Service(proc, port, prefix, topic)


async def committed(redis: Redis, service: Service, partitions: int) -> int:
    """Events the service has flushed: the sum of the offsets it stored with its aggregates."""
    keys = [f"{service.prefix}off:{service.topic}:{p}" for p in range(partitions)]
    values: list[Any] = await redis.mget(keys)
    return sum(int(v.split(b":")[0]) for v in values if v)


@dataclass
class Throughput:
    events: int
    seconds: float
    cpu_seconds: float
    memory: Memory
    summary: dict[str, object]
    redis_cpu_seconds: float = 0.0  # what Redis (all clients, in practice the service) used meanwhile
    broker_cpu_seconds: float = 0.0  # what the Kafka broker used meanwhile
    redis_command_seconds: float = 0.0  # INFO commandstats: time Redis spent in commands meanwhile
    wall_from_launch: float = 0.0  # launch → last event counted (start-up included)
    total: int = 0  # records in the backlog

    @property
    def per_s_from_launch(self) -> float:
        return self.total / self.wall_from_launch if self.wall_from_launch else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return 1e6 * self.cpu_seconds / self.events if self.events else 0.0

    @property
    def redis_us_per_event(self) -> float:
        return 1e6 * self.redis_cpu_seconds / self.events if self.events else 0.0

    @property
    def total_us_per_event(self) -> float:
        """This process's CPU and Redis's, per event."""
        return self.cpu_us_per_event + self.redis_us_per_event

    @property
    def redis_command_us_per_event(self) -> float:
        return 1e6 * self.redis_command_seconds / self.events if self.events else 0.0

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def per_cpu_s(self) -> float:
        return self.events / self.cpu_seconds if self.cpu_seconds else 0.0

    @property
    def busy(self) -> float:
        return self.cpu_seconds / self.seconds if self.seconds else 0.0

    @property
    def redis_busy(self) -> float:
        return self.redis_cpu_seconds / self.seconds if self.seconds else 0.0

    def broker(self, phase: str) -> BrokerCpu:
        return BrokerCpu(phase, self.seconds, self.broker_cpu_seconds)

    @classmethod
    def of_plain(cls, result: dict[str, Any]) -> Throughput:
        return cls(
            int(result["events"]),
            float(result["seconds"]),
            float(result["cpu_seconds"]),
            Memory(),
            {},
            broker_cpu_seconds=float(result["broker_cpu_seconds"]),
            wall_from_launch=float(result["wall_from_launch"]),
            total=int(result["events"]),
        )


async def aggregate_throughput(
    bootstrap: str,
    topic: str,
    partitions: int,
    total: int,
    redis: Redis,
    broker_pid: int,
    python: str = sys.executable,
) -> Throughput:
    launched = time.perf_counter()
    service = await start_service(bootstrap, topic, partitions, python)
    memory, stop = Memory(), asyncio.Event()
    pid = service.proc.pid
    assert pid is not None
    sampler: asyncio.Task[None] | None = None
    try:
        first_at, first_n, first_cpu, first_redis_cpu, first_broker_cpu = 0.0, 0, 0.0, 0.0, 0.0
        first_commands = 0.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 900
        while (n := await committed(redis, service, partitions)) < total:
            if n and not first_at:
                first_at, first_n, first_cpu = time.perf_counter(), n, cpu_seconds(pid)
                first_broker_cpu = cpu_seconds(broker_pid)
                first_redis_cpu = await redis_cpu_seconds(redis)
                first_commands = await redis_command_seconds(redis)
                # RSS from the first flush on, like events/s: start-up is not aggregating.
                sampler = asyncio.create_task(sample_rss(pid, memory, stop))
            if loop.time() > deadline:
                raise TimeoutError(f"service flushed {n} of {total} events")
            await asyncio.sleep(0.02)
        done = time.perf_counter()
        seconds, cpu = done - first_at, cpu_seconds(pid) - first_cpu
        broker_cpu = cpu_seconds(broker_pid) - first_broker_cpu
        redis_cpu = await redis_cpu_seconds(redis) - first_redis_cpu
        commands = await redis_command_seconds(redis) - first_commands
        stop.set()
        if sampler is not None:
            await sampler
        now = time.time_ns() // 1_000_000
        summary = await get_json(
            service.port, f"/api/analytics/summary?from={now - 3_600_000}&to={now + 60_000}"
        )
        return Throughput(
            total - first_n,
            seconds,
            cpu,
            memory,
            summary,
            redis_cpu,
            broker_cpu,
            commands,
            done - launched,
            total,
        )
    finally:
        stop.set()
        await service.proc.stop()
        await delete_keys(redis, f"{service.prefix}*")


async def redis_cpu_seconds(redis: Redis) -> float:
    """User + system CPU time the Redis server has used (``INFO cpu``)."""
    info: dict[str, Any] = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def redis_command_seconds(redis: Redis) -> float:
    """Seconds Redis has spent in scripts (``INFO commandstats``'s ``usec`` of ``eval``/``evalsha``):
    the flushes' read and apply, the commands they call included.

    Only scripts: a script's own calls are counted again under their commands, and ``exec`` again
    includes the apply script it ran, so a sum over every command counts the same time twice or
    thrice. What a command costs outside its execution (the request, the reply) is in ``INFO cpu``."""
    info: dict[str, Any] = await redis.info("commandstats")
    return sum(float(info[k]["usec"]) for k in ("cmdstat_eval", "cmdstat_evalsha") if k in info) / 1e6


async def get_json(port: int, path: str) -> dict[str, object]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        resp.raise_for_status()
        body: dict[str, object] = await resp.json()
        return body


# --- freshness at a fixed rate ----------------------------------------------------------------------


@dataclass
class Freshness:
    rate: float  # the target
    produced: int
    seconds: float  # how long the producer ran
    per_second: list[int]  # events produced in each whole second of the run
    producer_cpu_seconds: float  # this process (generator + librdkafka + the poller) meanwhile
    latencies_ms: list[float]
    memory: Memory
    broker: BrokerCpu
    broker_requests_per_s: dict[str, float]  # by type, over the producing span (give or take a scrape)
    flushes: int  # the service's flushes to Redis, and the seconds they took
    flush_seconds: float

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    @property
    def achieved(self) -> float:
        return self.produced / self.seconds if self.seconds else 0.0

    @property
    def slowest_second(self) -> int:
        return min(self.per_second, default=0)

    @property
    def sustained(self) -> bool:
        """The target rate held on average (within 1 %) and in every whole second (within 10 %)."""
        return self.achieved >= 0.99 * self.rate and self.slowest_second >= 0.9 * self.rate


@dataclass
class Paced:
    """What the paced producer did: events sent (and when), and what it and the broker spent."""

    per_second: list[int]  # events produced in each whole second of the run
    sent: int = 0
    log: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, sent so far), every 100th
    seconds: float = 0.0
    own_cpu_seconds: float = 0.0
    broker_cpu_seconds: float = 0.0


def produce_paced(
    bootstrap: str, topic: str, rate: float, seconds: float, broker_pid: int, warmup_topic: str
) -> Paced:
    """Clean events at ``rate`` for ``seconds`` (runs in a thread: librdkafka's calls block).

    The clock starts once the producer is connected, holds its idempotent producer id and knows
    ``topic``'s leaders: a cold librdkafka held the first ~0.5 s of events back and sent them in one
    burst, 1.2 s late, which was the run's p99, a producer's start rather than the service's freshness.
    """
    from stream.loadgen import Mix, generate, new_kafka_producer

    producer = new_kafka_producer(bootstrap)
    producer.produce(warmup_topic, b"warm-up")  # not to ``topic``: the service would count it
    if producer.flush(30):
        raise RuntimeError(f"the freshness producer could not deliver to {warmup_topic} in 30 s")
    producer.list_topics(topic, timeout=30)
    pairs = generate(Mix(late=0, duplicate=0, invalid=0, bots_per_minute=0), random.Random(5))
    paced = Paced(per_second=[0] * max(1, math.ceil(seconds)))
    broker_cpu, own_cpu = cpu_seconds(broker_pid), time.process_time()
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < seconds:
        due = int(rate * elapsed) + 1
        burst = paced.sent
        while paced.sent < due:
            key, value = next(pairs)
            try:
                producer.produce(topic, value, key=key)
            except BufferError:
                producer.poll(0.01)
                continue
            paced.sent += 1
            if paced.sent % 100 == 0:
                paced.log.append((time.monotonic(), paced.sent))
        paced.per_second[min(len(paced.per_second) - 1, int(elapsed))] += paced.sent - burst
        producer.poll(0)
        time.sleep(0.001)
    paced.seconds = time.monotonic() - began
    paced.broker_cpu_seconds = cpu_seconds(broker_pid) - broker_cpu
    paced.own_cpu_seconds = time.process_time() - own_cpu
    producer.flush(30)
    return paced


async def poll_visible(
    port: int, start_ms: int, visible: list[tuple[float, int]], until: Callable[[int], bool]
) -> None:
    """Append (monotonic time, events the API counts) every 20 ms until ``until(count)``. An answer
    other than 200 (a shed request on a busy box) is no reading: the next poll is."""
    path = f"/api/analytics/summary?from={start_ms - 600_000}&to={start_ms + 3_600_000}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            async with session.get(f"{local_url(port)}{path}") as resp:
                body = await resp.json()
            if resp.status == 200:
                visible.append((time.monotonic(), sum(body["counts"].values())))
                if until(visible[-1][1]):
                    return
            else:
                log(f"freshness poll: {resp.status} {body}")
            await asyncio.sleep(0.02)


def visibility_ms(produced: list[tuple[float, int]], visible: list[tuple[float, int]]) -> list[float]:
    """For each (time, k) produced, the ms until the API first counted k events (∞: never)."""
    latencies = []
    i = 0
    for at, count in produced:
        while i < len(visible) and visible[i][1] < count:
            i += 1
        latencies.append((visible[i][0] - at) * 1000 if i < len(visible) else math.inf)
    return latencies


async def freshness(
    broker: KafkaBroker, partitions: int, rate: float, seconds: float, redis: Redis
) -> Freshness:
    broker_pid = broker.pid
    assert broker_pid is not None
    topic_name = new_topic(broker, "fresh", partitions)
    warmup_topic = new_topic(broker, "fresh-warmup", 1)
    service = await start_service(broker.bootstrap, topic_name, partitions)
    memory, stop = Memory(), asyncio.Event()
    assert service.proc.pid is not None
    sampler = asyncio.create_task(sample_rss(service.proc.pid, memory, stop))
    try:
        await wait_until(
            lambda: _has_partitions(service.port), timeout=60, message="service holds its partitions"
        )
        visible: list[tuple[float, int]] = []
        produced: list[int] = []  # the total, once the producer is done

        requests_before = broker_requests(await scrape(broker.metrics_port))
        poller = asyncio.create_task(
            poll_visible(
                service.port,
                time.time_ns() // 1_000_000,
                visible,
                lambda n: bool(produced) and n >= produced[0],
            )
        )
        paced = await asyncio.to_thread(
            produce_paced, broker.bootstrap, topic_name, rate, seconds, broker_pid, warmup_topic
        )
        produced.append(paced.sent)
        requests_after = broker_requests(await scrape(broker.metrics_port))
        # A service that cannot keep up still gets a bounded wait; what it never showed counts as ∞.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(60.0, 2 * seconds)):
                await poller
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        stop.set()
        await sampler
        flushed = await scrape(service.port)
        return Freshness(
            rate,
            paced.sent,
            paced.seconds,
            paced.per_second[: int(paced.seconds)] or paced.per_second,  # the last, partial second left out
            paced.own_cpu_seconds,
            visibility_ms(paced.log, visible),
            memory,
            BrokerCpu(
                f"freshness: producing at {rate:,.0f} events/s", paced.seconds, paced.broker_cpu_seconds
            ),
            {
                kind: (requests_after[kind] - requests_before.get(kind, 0.0)) / paced.seconds
                for kind in requests_after
            },
            int(flushed.get("stream_flush_duration_seconds_count", 0)),
            flushed.get("stream_flush_duration_seconds_sum", 0.0),
        )
    finally:
        stop.set()
        await service.proc.stop()
        await delete_keys(redis, f"{service.prefix}*")


async def _has_partitions(port: int) -> bool:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        return "stream_consumer_lag{" in await resp.text()


# --- the run ------------------------------------------------------------------------------------------


@dataclass
class Backlog:
    events: int
    seconds: float
    producer_cpu_seconds: float
    broker: BrokerCpu
    truth: Truth = field(default_factory=dict)  # what the alternative apps must count, exactly
    countable: int = 0  # events in ``truth``


@dataclass
class Round:
    plain: Throughput
    service: Throughput
    plain_first: bool
    alts: dict[str, AltRun] = field(default_factory=dict)  # quix, faust
    base: Throughput | None = None  # the service at --baseline, same round

    @property
    def ratio(self) -> float:
        return self.service.per_s / self.plain.per_s if self.plain.per_s else 0.0

    @property
    def cpu_ratio(self) -> float:
        return self.service.per_cpu_s / self.plain.per_cpu_s if self.plain.per_cpu_s else 0.0


@dataclass
class Run:
    backlog: Backlog
    rounds: list[Round]
    fresh: Freshness
    broker_cpu_seconds: float  # over the whole run, /proc/<pid>/stat
    broker_jmx_cpu_seconds: float  # the same, from the JMX exporter
    seconds: float


# Large producer batches: a consumer's cost per record falls with the records per batch it fetches,
# and the load generator's 10 ms linger left ~100-record batches per partition, which halved the
# plain loop's ceiling. Up to 1 MB (the broker's message.max.bytes) or 1 s per partition batch.
BACKLOG_PRODUCER = {
    "linger.ms": 1000,
    "batch.size": 1_000_000,
    "batch.num.messages": 1_000_000,
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 2_000_000,
}


def produce_backlog(broker: KafkaBroker, topic: str, events: int) -> Backlog:
    """``events`` of the load generator's mix in large batches, as fast as librdkafka takes them,
    tallying what the alternative apps must count (its producer is gone on return, before the broker is)."""
    from stream.loadgen import Mix, generate

    pid = broker.pid
    assert pid is not None
    broker_cpu, own_cpu, began = cpu_seconds(pid), time.process_time(), time.monotonic()
    # The load generator's producer (idempotent, keys spread by murmur2), with large batches.
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "log_level": 4,
            **BACKLOG_PRODUCER,
        }
    )
    truth: dict[str, Counter[int]] = {}
    countable = 0
    pairs = generate(Mix(), random.Random(1))
    for _ in range(events):
        key, value = next(pairs)
        while True:
            try:
                producer.produce(topic, value, key=key)
                break
            except BufferError:  # the queue is full: let librdkafka send, then the same pair again
                producer.poll(0.05)
        if (cell := countable_key(value)) is not None:
            truth.setdefault(cell[0], Counter())[cell[1]] += 1
            countable += 1
    if (left := producer.flush(120)) != 0:
        raise RuntimeError(f"{left} events not delivered")
    seconds = time.monotonic() - began
    return Backlog(
        events,
        seconds,
        time.process_time() - own_cpu,
        BrokerCpu("pre-producing the backlog, unthrottled", seconds, cpu_seconds(pid) - broker_cpu),
        {kind: {str(m): n for m, n in minutes.items()} for kind, minutes in truth.items()},
        countable,
    )


async def bench(args: argparse.Namespace) -> str:
    stop_on_sigterm()
    run_began = time.monotonic()
    log("starting a Kafka broker (one KRaft node, JMX exporter on)")
    broker = await asyncio.to_thread(KafkaBroker, metrics_port=free_port())
    redis = Redis.from_url(REDIS_URL, socket_timeout=10)
    try:
        pid = broker.pid
        assert pid is not None
        jmx_began, proc_began = await jmx_cpu_seconds(broker.metrics_port), cpu_seconds(pid)
        await ensure_topics(broker.bootstrap, SERVICE_OUTPUTS)
        topic_name = new_topic(broker, "bench", args.partitions)
        log(f"producing {args.events:,} events to {topic_name} ({args.partitions} partitions)")
        backlog = await asyncio.to_thread(produce_backlog, broker, topic_name, args.events)
        total = backlog.events
        log(f"produced {total:,} in {backlog.seconds:.1f}s")

        log(f"{backlog.countable:,} of them countable by the alternative apps")
        apps = [a for a in args.apps.split(",") if a]
        python = alt_python() if apps else Path(sys.executable)
        for interpreter in {sys.executable, python, *([args.baseline] if args.baseline else [])}:
            await asyncio.to_thread(compile_bytecode, interpreter)
        variants = ["plain", "service", *(["base"] if args.baseline else []), *apps]
        rounds = []
        result: dict[str, Throughput] = {}
        alts: dict[str, AltRun] = {}
        for round_no, which in interleaved(args.rounds, variants, alternate=True):
            if which == "plain":
                plain = await run_plain_loop(broker.bootstrap, topic_name, total, pid)
                result[which] = Throughput.of_plain(plain)
            elif which in ("service", "base"):
                result[which] = await aggregate_throughput(
                    broker.bootstrap,
                    topic_name,
                    args.partitions,
                    total,
                    redis,
                    pid,
                    args.baseline if which == "base" else sys.executable,
                )
            else:
                limit = alt_limit(args, round_no)
                alt = await run_alt(
                    which, python, broker.bootstrap, topic_name, args.partitions, backlog, limit
                )
                alts[which] = alt
                log(
                    f"round {round_no}: {which} {alt.per_s:,.0f} events/s from launch, "
                    + (
                        f"counts {'exact' if alt.exact else f'WRONG in {alt.mismatches} cells'}"
                        if alt.finished
                        else f"stopped at {limit:.0f} s, {alt.counted:,} counted (a partial run)"
                    )
                )
            if which in result:
                t = result[which]
                log(
                    f"round {round_no}: {which} {t.per_s:,.0f} events/s, {t.per_s_from_launch:,.0f} from "
                    f"launch; {t.cpu_us_per_event:.1f} µs process + {t.redis_us_per_event:.1f} µs Redis "
                    "CPU per event"
                )
            if len(result) + len(alts) == len(variants):
                rounds.append(
                    Round(
                        result.pop("plain"),
                        result.pop("service"),
                        plain_first=round_no % 2 == 1,
                        alts=alts,
                        base=result.pop("base", None),
                    )
                )
                alts = {}
                log(f"round {round_no}: service/plain {rounds[-1].ratio:.0%}")

        log(f"freshness at {args.rate:,.0f} events/s for {args.seconds:.0f}s")
        fresh = await freshness(broker, args.partitions, args.rate, args.seconds, redis)
        log(f"freshness p99 {fresh.pct(0.99):.0f} ms; producer achieved {fresh.achieved:,.0f} events/s")
        run = Run(
            backlog,
            rounds,
            fresh,
            cpu_seconds(pid) - proc_began,
            await jmx_cpu_seconds(broker.metrics_port) - jmx_began,
            time.monotonic() - run_began,
        )
        log(f"done in {run.seconds:.0f}s")
        return report(args, run)
    finally:
        await redis.aclose()
        await asyncio.to_thread(broker.close)


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def _pcts(values: list[float]) -> str:
    return spread([100 * v for v in values], "{:.0f} %")


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _accounted(summary: dict[str, Any]) -> tuple[int, int]:
    """(events counted, events counted or set aside as late, invalid or duplicate)."""
    counted = sum(summary["counts"].values())
    return counted, counted + sum(int(summary[k]) for k in ("late", "invalid", "duplicates"))


def report(args: argparse.Namespace, run: Run) -> str:
    """The run as markdown: throughput against the plain loop, the broker's CPU, freshness and memory."""
    return "\n".join(
        [*_throughput(args, run), *_tools(run), *_cpu(args, run), *_broker(run), *_freshness(run)]
    )


def _tools(run: Run) -> list[str]:
    """Every tool over the same backlog, wall clock from its launch to the last event it counted."""
    rounds, total = run.rounds, run.backlog.events
    service = [r.service.per_s_from_launch for r in rounds]
    rows = [
        [
            "stream service (everything, flushed to Redis with offsets)",
            spread(service),
            spread([r.service.per_s for r in rounds]),
            "the accounting below",
            "",
        ],
        [
            "plain aiokafka `getmany` loop (decode + count by type)",
            spread([r.plain.per_s_from_launch for r in rounds]),
            spread([r.plain.per_s for r in rounds]),
            f"{total:,} read",
            "",
        ],
    ]
    targets = {"quix": 6.0, "faust": 30.0}
    for app, name in ALT_APPS.items():
        runs = [r.alts[app] for r in rounds if app in r.alts]
        if not runs:
            continue
        ratios = [r.service.per_s_from_launch / r.alts[app].per_s for r in rounds if app in r.alts]
        done = [a for a in runs if a.finished]
        exact = all(a.exact for a in done)
        unfinished = len(runs) - len(done)
        counts = (
            f"{done[0].counted:,} counted; "
            + ("exact" if exact else f"**WRONG** ({[a.mismatches for a in done]} cells)")
            + f" in {len(done)} of {len(runs)} rounds"
            if done
            else "never finished: counts not checked"
        )
        if unfinished:
            partial = ", ".join(f"{a.counted:,} in {a.wall:.0f} s" for a in runs if not a.finished)
            counts += (
                f"; {unfinished} stopped at the time limit or crashed, after {partial} "
                "(events/s over what it counted)"
            )
        rows.append(
            [
                f"{name}: tumbling 1-minute count per type (`{app}_count.py`)",
                spread([a.per_s for a in runs]),
                spread(counting) if (counting := [a.per_s_counting for a in runs if a.counted]) else "n/a",
                counts,
                f"service ≥ {targets[app]:.0f}x: {spread(ratios, '{:.1f}x')}, "
                f"{_verdict(median(ratios) >= targets[app])}",
            ]
        )
    per_round = "; ".join(
        f"{i}. service {r.service.per_s_from_launch:,.0f}, plain {r.plain.per_s_from_launch:,.0f}"
        + "".join(f", {app} {a.per_s:,.0f}" for app, a in r.alts.items())
        for i, r in enumerate(rounds, 1)
    )
    return [
        f"The same {total:,} events through every tool, each a fresh consumer group on the same broker "
        "(events/s = backlog / wall seconds from the process's launch to the last event counted; "
        "beside it, from the first event counted to the last). The alternative apps run in their own "
        "pinned environment (`loadtests/altstreams`, its own uv.lock) and their counts are checked, per "
        "(type, minute), against what the pre-producer tallied. Every environment's modules are compiled "
        "to bytecode first, as the image does (`UV_COMPILE_BYTECODE=1`): no tool's start-up includes "
        "compiling its imports.",
        "",
        *table(
            ["tool", "events/s from launch", "events/s while counting", "counts", "target"],
            rows,
            align="lrrll",
        ),
        "",
        f"Per round (events/s from launch): {per_round}.",
        "",
    ]


def _base_label(args: argparse.Namespace) -> str:
    if args.baseline_rev:
        return f"the start of the work, {args.baseline_rev[:7]}"
    return "--baseline"


def _cpu_target(args: argparse.Namespace, run: Run) -> list[str]:
    """Issue 19's target: process + Redis CPU per event at most half the start of the work's."""
    pairs = [(r.service, r.base) for r in run.rounds if r.base is not None]
    if not pairs:
        return []
    ratios = [ours.total_us_per_event / base.total_us_per_event for ours, base in pairs]
    ratio = median(ratios)
    return [
        f"Target (issue 19): process + Redis CPU per event ≤ {CPU_TARGET:.0%} of the service at "
        f"{_base_label(args)}, same run — this tree / that one {ratio:.2f} (rounds "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f"): {_verdict(ratio <= CPU_TARGET)}.",
        "",
    ]


def _cpu(args: argparse.Namespace, run: Run) -> list[str]:
    """CPU per event of the service process and of Redis: /proc and INFO cpu, and INFO commandstats."""
    rows = []
    variants = [("this tree", [r.service for r in run.rounds])]
    if all(r.base is not None for r in run.rounds):
        variants.append((_base_label(args), [cast(Throughput, r.base) for r in run.rounds]))
    for label, runs in variants:
        rows.append(
            [
                f"service ({label})",
                spread([t.cpu_us_per_event for t in runs], "{:.1f}"),
                spread([t.redis_us_per_event for t in runs], "{:.1f}"),
                spread([t.redis_command_us_per_event for t in runs], "{:.1f}"),
                spread([t.total_us_per_event for t in runs], "{:.1f}"),
                spread([t.per_s for t in runs]),
            ]
        )
    alt_rows = [
        [
            f"{name} (whole process, start-up included)",
            spread([r.alts[app].cpu_us_per_event for r in run.rounds if app in r.alts], "{:.1f}"),
            "",
            "",
            "",
            "",
        ]
        for app, name in ALT_APPS.items()
        if any(app in r.alts for r in run.rounds)
    ]
    per_round = "; ".join(
        f"{i}. {r.service.cpu_us_per_event:.1f} + {r.service.redis_us_per_event:.1f}"
        + (
            f" ({_base_label(args)}: {r.base.cpu_us_per_event:.1f} + {r.base.redis_us_per_event:.1f})"
            if r.base is not None
            else ""
        )
        for i, r in enumerate(run.rounds, 1)
    )
    return [
        "CPU per event, independent of core count (first flush to last): the service process by "
        "/proc/<pid>/stat, Redis by `INFO cpu` (user + system; every client, in practice the service) "
        "and by `INFO commandstats` (time inside `eval`: the flushes' read and apply scripts).",
        "",
        *table(
            [
                "process",
                "process µs/event",
                "Redis µs/event (INFO cpu)",
                "Redis µs/event in scripts (commandstats)",
                "process + Redis µs/event",
                "events/s",
            ],
            rows + alt_rows,
            align="lrrrrr",
        ),
        "",
        f"Per round (process + Redis µs/event): {per_round}.",
        "",
        *_cpu_target(args, run),
    ]


def _throughput(args: argparse.Namespace, run: Run) -> list[str]:
    total, rounds = run.backlog.events, run.rounds
    plains, services = [r.plain for r in rounds], [r.service for r in rounds]
    cores = os.cpu_count() or 1
    per_round = "; ".join(
        f"{i}. {'plain first' if r.plain_first else 'service first'}: {r.plain.per_s:,.0f} / "
        f"{r.service.per_s:,.0f} = {_pct(r.ratio)}"
        for i, r in enumerate(rounds, 1)
    )
    backlog_rate = total / run.backlog.seconds if run.backlog.seconds else 0.0
    heap = os.environ.get("KAFKA_HEAP", "512m")
    service_rate = median(v.per_s for v in services)
    return [
        f"{total:,} events pre-produced to a {args.partitions}-partition topic on a real Apache Kafka "
        f"{kafka_version()} broker (one KRaft node, {heap} heap, on this box, loopback) in "
        f"{run.backlog.seconds:.1f} s ({backlog_rate:,.0f} events/s); local Redis; {cores} CPUs shared "
        "by the broker, Redis, the service, the producer and whatever else ran (load average "
        f"{os.getloadavg()[0]:.1f} at the end of the run). {len(rounds)} interleaved rounds over that "
        "backlog (plain loop and service alternating first); each cell is the median, min-max in "
        "brackets — the spread is the noise of a shared box.",
        "",
        *table(
            ["measurement", "events/s (wall clock)", "events per CPU-second of that process", "target"],
            [
                [
                    "plain aiokafka `getmany` loop: decode (msgspec) + count by type",
                    spread([p.per_s for p in plains]),
                    spread([p.per_cpu_s for p in plains]),
                    "the ceiling",
                ],
                [
                    "stream service: every window, HLL, funnel, recommendation and risk state, each batch "
                    "flushed to Redis with its offsets",
                    spread([v.per_s for v in services]),
                    spread([v.per_cpu_s for v in services]),
                    f"≥ 75,000/s: {_verdict(service_rate >= 75_000)}",
                ],
                [
                    "service / plain, per round",
                    _pcts([r.ratio for r in rounds]),
                    _pcts([r.cpu_ratio for r in rounds]),
                    f"≥ 50 %: {_verdict(median(r.ratio for r in rounds) >= 0.5)}",
                ],
            ],
            align="lrrl",
        ),
        "",
        f"Rounds (plain / service events/s = ratio): {per_round}.",
        "",
        "Where the service's wall time went: its process was on a CPU "
        f"{_pcts([v.busy for v in services])} of it, Redis "
        f"{_pcts([v.redis_busy for v in services])} (single-threaded: the read and apply "
        "scripts of each flush), the broker "
        f"{_pcts([v.broker('').cores for v in services])} of a core. A batch's flush is a "
        "chain — read script, then the ops built in this process, then the apply script — and the next "
        "batch is judged meanwhile; when the chain is longer than the judging, the process waits.",
        "",
    ]


def _broker(run: Run) -> list[str]:
    cores = os.cpu_count() or 1
    backlog_rate = run.backlog.events / run.backlog.seconds if run.backlog.seconds else 0.0
    spans = {
        f"pre-producing the backlog, unthrottled ({backlog_rate:,.0f} events/s)": [run.backlog.broker],
        "plain loop draining the backlog": [r.plain.broker("") for r in run.rounds],
        "stream service draining the backlog": [r.service.broker("") for r in run.rounds],
        f"freshness: producing at {run.fresh.achieved:,.0f} events/s, the service consuming": [
            run.fresh.broker
        ],
    }
    return [
        f"The broker's CPU (its JVM's user + system time over each measured span; {cores} cores in the box):",
        "",
        *table(
            [
                "phase",
                "wall s",
                "broker CPU s",
                "broker cores busy (CPU s / wall s)",
                "share of the box's cores",
            ],
            [
                [
                    label,
                    spread([b.seconds for b in phase], "{:.1f}"),
                    spread([b.cpu_seconds for b in phase], "{:.1f}"),
                    spread([b.cores for b in phase], "{:.2f}"),
                    _pcts([b.share for b in phase]),
                ]
                for label, phase in spans.items()
            ],
        ),
        "",
        f"Over the whole run ({run.seconds:.0f} s) the broker used {run.broker_cpu_seconds:.1f} CPU-seconds "
        f"by /proc/<pid>/stat, {run.broker_jmx_cpu_seconds:.1f} by its JMX exporter's "
        "`process_cpu_seconds_total` (which includes the exporter's own two scrapes).",
        "",
    ]


def _freshness(run: Run) -> list[str]:
    total, rounds, fresh = run.backlog.events, run.rounds, run.fresh
    # The round whose service rate is the median: its memory and accounting stand for the rest.
    mid = sorted(rounds, key=lambda r: r.service.per_s)[len(rounds) // 2]
    s = mid.service.summary
    counted, all_in = _accounted(s)
    mismatched = [i for i, r in enumerate(rounds, 1) if _accounted(r.service.summary)[1] != total]
    flat_rounds = sum(r.service.memory.flat for r in rounds)
    sampled = sum(len(r.service.memory.samples) >= 10 for r in rounds)  # a quick run may be too short
    producer_cpu = _pct(fresh.producer_cpu_seconds / fresh.seconds)
    lines = []
    if not fresh.sustained:
        lines += [
            f"**The producer did not sustain {fresh.rate:,.0f} events/s on this box**: it achieved "
            f"{fresh.achieved:,.0f} events/s on average, {fresh.slowest_second:,} in its slowest second, "
            f"using {producer_cpu} of a core; the freshness below is at that rate.",
            "",
        ]
    flat = f"flat (≤ +{FLAT:.0%} after warm-up): "
    rows = [
        [
            "producer during the freshness run (librdkafka, one Python thread generating; connected, with "
            "its producer id, before its clock starts)",
            f"{fresh.achieved:,.0f} events/s on average, {fresh.slowest_second:,} in the slowest second; "
            f"{producer_cpu} of a core",
            f"{fresh.rate:,.0f}/s sustained: {_verdict(fresh.sustained)}",
        ],
        [
            f"freshness at {fresh.achieved:,.0f} events/s for {fresh.seconds:.0f} s, produced → visible in "
            "`/api/analytics/summary`",
            f"p50 {_ms(fresh.pct(0.5))}, p99 {_ms(fresh.pct(0.99))}, "
            f"max {_ms(max(fresh.latencies_ms, default=math.nan))}",
            f"p99 < 1 s: {_verdict(fresh.pct(0.99) < 1000)}",
        ],
        [
            f"service RSS while aggregating {total:,} events (the median round)",
            mid.service.memory.summary(),
            flat
            + (
                f"{_verdict(flat_rounds == len(rounds))} ({flat_rounds} of {len(rounds)} rounds)"
                if sampled
                else "n/a (too short to sample)"
            ),
        ],
        ["service RSS during the freshness run", fresh.memory.summary(), flat + _verdict(fresh.memory.flat)],
    ]
    every = "all, in every round" if not mismatched else f"MISMATCH in round(s) {mismatched}"
    return [
        *lines,
        *table(["measurement", "result", "target"], rows, align="lrl"),
        "",
        _freshness_costs(fresh),
        "",
        f"Every event accounted for by the service (the median round): {counted:,} counted + "
        f"{s['late']:,} late + {s['invalid']:,} invalid + {s['duplicates']:,} duplicates = {all_in:,} of "
        f"{total:,} produced ({every}).",
    ]


def _freshness_costs(fresh: Freshness) -> str:
    """Where an event's way to the API went during the freshness run: flushes, broker requests."""
    requests = ", ".join(
        f"{per_s:,.0f} {kind}" for kind, per_s in sorted(fresh.broker_requests_per_s.items()) if per_s >= 0.5
    )
    flushes = "the service's flush metrics were not readable"
    if fresh.flushes:
        each_ms = 1000 * fresh.flush_seconds / fresh.flushes
        busy = _pct(fresh.flush_seconds / fresh.seconds)
        flushes = (
            f"the service flushed {fresh.flushes:,} batches to Redis (about "
            f"{fresh.produced / fresh.flushes:,.0f} events each, {each_ms:.0f} ms on average; flushing "
            f"{busy} of the run)"
        )
    return (
        f"During the freshness run {flushes}; the broker answered "
        f"{requests or 'an unknown number of'} requests/s (its JMX exporter)."
    )


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if math.isfinite(value) else "never (not visible by the deadline)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="pre-produced events (default 1,000,000)"
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=16,
        help="partitions of each topic (default 16, as STREAM_PARTITIONS)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved plain/service rounds over the backlog (default 3)"
    )
    parser.add_argument("--rate", type=float, default=20_000, help="events/s of the freshness run")
    parser.add_argument("--seconds", type=float, default=30, help="length of the freshness run")
    parser.add_argument(
        "--quick", action="store_true", help="100,000 events, 3 rounds and a 10 s freshness run"
    )
    parser.add_argument(
        "--apps",
        default="quix,faust",
        help="alternative apps run each round, comma-separated (default quix,faust; '' for none)",
    )
    parser.add_argument(
        "--alt-timeout",
        type=float,
        default=240,
        help="seconds an alternative app may take over the backlog before it is stopped (default 240: "
        "faust-streaming counts < 1,000 events/s here, so 1M events would take a report past 30 min; "
        "a stopped app's events/s is measured over the events it had counted by then)",
    )
    parser.add_argument(
        "--alt-last-timeout",
        type=float,
        default=ALT_LAST_TIMEOUT_S,
        help=f"the limit of the last round instead (default {ALT_LAST_TIMEOUT_S:.0f} s): a tool stopped "
        "at --alt-timeout counts the whole backlog once, so every tool's counts are checked "
        "(--quick: --alt-timeout)",
    )
    parser.add_argument(
        "--baseline-rev",
        metavar="REV",
        help="also run, each round, the service as it was at this commit (a git worktree with its own "
        f"uv environment): an A/B of CPU per event in one run (default {START_OF_WORK[:7]}, the start of "
        "issue 19's work; --quick: none; '' for none)",
    )
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="also run, each round, the service under this interpreter (another tree's environment): "
        "an A/B of CPU per event in one run",
    )
    parser.add_argument(
        "--plain-loop", nargs=4, metavar=("BOOTSTRAP", "TOPIC", "COUNT", "BROKER_PID"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.plain_loop:
        bootstrap, topic, count, broker_pid = args.plain_loop
        plain_loop(bootstrap, topic, int(count), int(broker_pid))
        return
    if args.quick:
        args.events, args.rounds, args.seconds = 100_000, 3, 10
        args.alt_timeout = min(args.alt_timeout, 60)
        args.alt_last_timeout = args.alt_timeout
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.baseline_rev is None:
        args.baseline_rev = "" if args.quick or args.baseline else START_OF_WORK
    if args.baseline and args.baseline_rev:
        parser.error("--baseline and --baseline-rev name the same comparison: give one")
    with contextlib.ExitStack() as stack:
        if args.baseline_rev:
            log(f"preparing the service's tree at {args.baseline_rev[:7]} (a worktree, its own environment)")
            args.baseline = str(stack.enter_context(tree_python(args.baseline_rev)))
        print(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
