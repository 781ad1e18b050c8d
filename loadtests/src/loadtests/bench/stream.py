"""Stream analytics: events/s one process consumes *and* aggregates, against a plain loop, and freshness.

``python -m loadtests.bench.stream`` starts one private Apache Kafka broker for the whole run
(``asynccore.kafka_broker.KafkaBroker``: a single KRaft node on loopback, its JMX exporter on) and:

1. pre-produces ``--events`` (default 1,000,000) shop events — the load generator's mix, a few late,
   duplicated and malformed — into a fresh topic of ``--partitions`` partitions, created through the
   admin API (the broker does not create topics on first use);
2. ``--rounds`` (default 3) interleaved rounds over that same backlog, the order alternating:
   - **plain loop**: a separate process runs an aiokafka ``getmany`` loop that decodes every event
     (msgspec) and counts by type — the Python ceiling on this machine;
   - **stream service**: ``python -m stream`` consumes the topic as a fresh one-member group, maintaining
     every window, HyperLogLog, funnel, recommendation and risk state and flushing each batch to Redis
     with its offsets. Events/s is taken from the offsets it commits to Redis (first to last flush);
     its RSS is sampled over the same span;
   the report gives medians over the rounds, the min-max beside them, and the ratio service/plain;
3. **freshness**: a fresh topic and service; events are produced at a fixed ``--rate`` (20,000/s) for
   ``--seconds`` while the API's summary count is polled every 20 ms. The k-th event is visible when
   the count first reaches k: p50/p99/max of (visible - produced). The rate the producer actually
   achieved (on average and in its slowest second) is reported next to the target.

In every phase the broker JVM's CPU time (``/proc/<pid>/stat``) is read at the start and end of the
measured span: broker CPU-seconds per wall second, and that as a share of the box's cores. Over the
whole run it is checked against the JMX exporter's ``process_cpu_seconds_total``.

Targets (issue 5): service ≥ 50 % of the plain loop (and ≥ 75,000 events/s), freshness p99 < 1 s,
memory flat. Prints markdown on stdout, progress on stderr; every Redis key it wrote is deleted, and the
broker's data dir with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import re
import secrets
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import orjson
from redis.asyncio import Redis

from asynccore.kafka import ensure_topics
from asynccore.kafka_broker import LAUNCHER, KafkaBroker
from asynccore.testing import ServiceProcess, free_port, wait_until

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# Debug mode and chatty logs would dominate what we measure.
QUIET = {"PYTHONASYNCIODEBUG": "", "LOG_LEVEL": "WARNING"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# The topics the service produces to (dead letters, risk alerts), as its defaults name and size them:
# created once per broker, so no round depends on which service start creates them.
SERVICE_OUTPUTS = {"events.dlq": 4, "risk.alerts": 4}


def new_topic(broker: KafkaBroker, prefix: str, partitions: int) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    broker.create_topic(name, partitions)  # the admin API: the broker does not create topics on use
    return name


def kafka_version() -> str:
    pom = (LAUNCHER.parent / "pom.xml").read_text()
    start = pom.index("<kafka.version>") + len("<kafka.version>")
    return pom[start : pom.index("</kafka.version>", start)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


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


FLAT = 0.10  # "memory flat": RSS at the end at most 10 % above RSS after warm-up (as bench.blog)


@dataclass
class Memory:
    """RSS samples over a run; flat means the end (last 10 % of samples) is within ``FLAT`` of the
    level after warm-up (10-20 % of the samples), the definition the blog benchmark uses too."""

    samples: list[float] = field(default_factory=list)

    def _window(self, start: float, end: float) -> float:
        n = len(self.samples)
        return statistics.median(self.samples[int(n * start) : max(int(n * start) + 1, int(n * end))])

    @property
    def growth(self) -> float:
        return self._window(0.9, 1.0) / self._window(0.1, 0.2) - 1

    @property
    def flat(self) -> bool:
        return len(self.samples) >= 10 and self.growth <= FLAT

    def summary(self) -> str:
        if len(self.samples) < 10:
            return "n/a (too few samples)"
        return (
            f"{min(self.samples):.0f}-{max(self.samples):.0f} MiB; after warm-up "
            f"{self._window(0.1, 0.2):.0f}, at the end {self._window(0.9, 1.0):.0f} "
            f"({self.growth * 100:+.1f} %)"
        )


async def sample_rss(pid: int, memory: Memory, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            memory.samples.append(rss_mib(pid))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.25):
                await stop.wait()


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
            broker_cpu = cpu_seconds(broker_pid) - broker_started
        finally:
            await consumer.stop()
        return {
            "events": seen,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "broker_cpu_seconds": broker_cpu,
            "by_type": by_type,
        }

    print(orjson.dumps(uvloop.run(run())).decode())


async def run_plain_loop(bootstrap: str, topic: str, count: int, broker_pid: int) -> dict[str, object]:
    argv = ["-m", "loadtests.bench.stream", "--plain-loop", bootstrap, topic, str(count), str(broker_pid)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.PIPE, env={**os.environ, **QUIET}
    )
    async with asyncio.timeout(600):
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"plain loop failed ({proc.returncode})")
    result: dict[str, object] = orjson.loads(out.splitlines()[-1])
    return result


# --- the stream service --------------------------------------------------------------------------


@dataclass
class Service:
    proc: ServiceProcess
    port: int
    prefix: str
    topic: str


async def start_service(bootstrap: str, topic: str, partitions: int) -> Service:
    port = free_port()
    prefix = f"bench-stream:{uuid.uuid4().hex[:8]}:"
    env = {
        **QUIET,
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
    proc = ServiceProcess(
        [sys.executable, "-m", "stream"], env=env, health_url=f"http://127.0.0.1:{port}/readyz", name="stream"
    )
    await proc.start(timeout=60)
    return Service(proc, port, prefix, topic)


async def committed(redis: Redis, service: Service, partitions: int) -> int:
    """Events the service has flushed: the sum of the offsets it stored with its aggregates."""
    keys = [f"{service.prefix}off:{service.topic}:{p}" for p in range(partitions)]
    values: list[Any] = await redis.mget(keys)
    return sum(int(v.split(b":")[0]) for v in values if v)


async def drop_prefix(redis: Redis, prefix: str) -> None:
    batch = [key async for key in redis.scan_iter(match=f"{prefix}*", count=5000)]
    for i in range(0, len(batch), 5000):
        await redis.delete(*batch[i : i + 5000])


@dataclass
class Throughput:
    events: int
    seconds: float
    cpu_seconds: float
    memory: Memory
    summary: dict[str, object]
    redis_cpu_seconds: float = 0.0  # what Redis (all clients, in practice the service) used meanwhile
    broker_cpu_seconds: float = 0.0  # what the Kafka broker used meanwhile

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
        )


async def aggregate_throughput(
    bootstrap: str, topic: str, partitions: int, total: int, redis: Redis, broker_pid: int
) -> Throughput:
    service = await start_service(bootstrap, topic, partitions)
    memory, stop = Memory(), asyncio.Event()
    pid = service.proc.pid
    assert pid is not None
    sampler: asyncio.Task[None] | None = None
    try:
        first_at, first_n, first_cpu, first_redis_cpu, first_broker_cpu = 0.0, 0, 0.0, 0.0, 0.0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 900
        while (n := await committed(redis, service, partitions)) < total:
            if n and not first_at:
                first_at, first_n, first_cpu = time.perf_counter(), n, cpu_seconds(pid)
                first_broker_cpu = cpu_seconds(broker_pid)
                first_redis_cpu = await redis_cpu_seconds(redis)
                # RSS from the first flush on, like events/s: start-up is not aggregating.
                sampler = asyncio.create_task(sample_rss(pid, memory, stop))
            if loop.time() > deadline:
                raise TimeoutError(f"service flushed {n} of {total} events")
            await asyncio.sleep(0.02)
        seconds, cpu = time.perf_counter() - first_at, cpu_seconds(pid) - first_cpu
        broker_cpu = cpu_seconds(broker_pid) - first_broker_cpu
        redis_cpu = await redis_cpu_seconds(redis) - first_redis_cpu
        stop.set()
        if sampler is not None:
            await sampler
        now = time.time_ns() // 1_000_000
        summary = await get_json(
            service.port, f"/api/analytics/summary?from={now - 3_600_000}&to={now + 60_000}"
        )
        return Throughput(total - first_n, seconds, cpu, memory, summary, redis_cpu, broker_cpu)
    finally:
        stop.set()
        await service.proc.stop()
        await drop_prefix(redis, service.prefix)


async def redis_cpu_seconds(redis: Redis) -> float:
    """User + system CPU time the Redis server has used (``INFO cpu``)."""
    info: dict[str, Any] = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


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


async def freshness(
    broker: KafkaBroker, partitions: int, rate: float, seconds: float, redis: Redis
) -> Freshness:
    from stream.loadgen import Mix, generate, new_kafka_producer

    bootstrap, broker_pid = broker.bootstrap, broker.pid
    assert broker_pid is not None
    topic_name = new_topic(broker, "fresh", partitions)
    service = await start_service(bootstrap, topic_name, partitions)
    memory, stop = Memory(), asyncio.Event()
    assert service.proc.pid is not None
    sampler = asyncio.create_task(sample_rss(service.proc.pid, memory, stop))
    try:
        await wait_until(
            lambda: _has_partitions(service.port), timeout=60, message="service holds its partitions"
        )
        start_ms = time.time_ns() // 1_000_000
        produced_log: list[tuple[float, int]] = []  # (monotonic time, events produced so far)
        visible_log: list[tuple[float, int]] = []
        per_second = [0] * max(1, math.ceil(seconds))
        spans: dict[str, float] = {}
        producing_done = asyncio.Event()

        def produce() -> int:
            producer = new_kafka_producer(bootstrap)
            clean = Mix(late=0, duplicate=0, invalid=0, bots_per_minute=0)
            pairs = generate(clean, random.Random(5))
            broker_cpu, own_cpu = cpu_seconds(broker_pid), time.process_time()
            began = time.monotonic()
            sent = 0
            while (elapsed := time.monotonic() - began) < seconds:
                due = int(rate * elapsed) + 1
                burst = sent
                while sent < due:
                    key, value = next(pairs)
                    try:
                        producer.produce(topic_name, value, key=key)
                    except BufferError:
                        producer.poll(0.01)
                        continue
                    sent += 1
                    if sent % 100 == 0:
                        produced_log.append((time.monotonic(), sent))
                per_second[min(len(per_second) - 1, int(elapsed))] += sent - burst
                producer.poll(0)
                time.sleep(0.001)
            spans["seconds"] = time.monotonic() - began
            spans["broker_cpu"] = cpu_seconds(broker_pid) - broker_cpu
            spans["own_cpu"] = time.process_time() - own_cpu
            producer.flush(30)
            return sent

        async def poll() -> None:
            path = f"/api/analytics/summary?from={start_ms - 600_000}&to={start_ms + 3_600_000}"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                while True:
                    async with session.get(f"http://127.0.0.1:{service.port}{path}") as resp:
                        counts = (await resp.json())["counts"]
                    visible_log.append((time.monotonic(), sum(counts.values())))
                    if producing_done.is_set() and visible_log[-1][1] >= produced:
                        return
                    await asyncio.sleep(0.02)

        requests_before = broker_requests(await scrape(broker.metrics_port))
        poller = asyncio.create_task(poll())
        produced = await asyncio.to_thread(produce)
        producing_done.set()
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
        latencies = []
        i = 0
        for at, count in produced_log:
            while i < len(visible_log) and visible_log[i][1] < count:
                i += 1
            latencies.append((visible_log[i][0] - at) * 1000 if i < len(visible_log) else math.inf)
        whole = per_second[: int(spans["seconds"])] or per_second  # the last, partial second left out
        return Freshness(
            rate,
            produced,
            spans["seconds"],
            whole,
            spans["own_cpu"],
            latencies,
            memory,
            BrokerCpu(f"freshness: producing at {rate:,.0f} events/s", spans["seconds"], spans["broker_cpu"]),
            {
                kind: (requests_after[kind] - requests_before.get(kind, 0.0)) / spans["seconds"]
                for kind in requests_after
            },
            int(flushed.get("stream_flush_duration_seconds_count", 0)),
            flushed.get("stream_flush_duration_seconds_sum", 0.0),
        )
    finally:
        stop.set()
        await service.proc.stop()
        await drop_prefix(redis, service.prefix)


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


@dataclass
class Round:
    plain: Throughput
    service: Throughput
    plain_first: bool

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


def produce_backlog(broker: KafkaBroker, topic: str, events: int) -> Backlog:
    """``events`` of the load generator's mix, as fast as librdkafka takes them (its producer is gone
    on return, before the broker is)."""
    from stream.loadgen import Mix, generate, new_kafka_producer, produce

    pid = broker.pid
    assert pid is not None
    broker_cpu, own_cpu, began = cpu_seconds(pid), time.process_time(), time.monotonic()
    producer = new_kafka_producer(broker.bootstrap)
    total = produce(producer, topic, generate(Mix(), random.Random(1)), rate=0, duration_s=3600, count=events)
    seconds = time.monotonic() - began
    return Backlog(
        total,
        seconds,
        time.process_time() - own_cpu,
        BrokerCpu("pre-producing the backlog, unthrottled", seconds, cpu_seconds(pid) - broker_cpu),
    )


async def bench(args: argparse.Namespace) -> str:
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

        rounds = []
        for r in range(args.rounds):
            plain_first = r % 2 == 0
            result: dict[str, Throughput] = {}
            for which in ("plain", "service") if plain_first else ("service", "plain"):
                if which == "plain":
                    plain = await run_plain_loop(broker.bootstrap, topic_name, total, pid)
                    result[which] = Throughput.of_plain(plain)
                else:
                    result[which] = await aggregate_throughput(
                        broker.bootstrap, topic_name, args.partitions, total, redis, pid
                    )
                log(f"round {r + 1}: {which} {result[which].per_s:,.0f} events/s")
            rounds.append(Round(result["plain"], result["service"], plain_first))
            log(f"round {r + 1}: service/plain {rounds[-1].ratio:.0%}")

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


def _spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    """The median, then min-max in brackets: the noise between rounds."""
    med = fmt.format(statistics.median(values))
    return med if len(values) < 2 else f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def _pcts(values: list[float]) -> str:
    return _spread([100 * v for v in values], "{:.0f} %")


def report(args: argparse.Namespace, run: Run) -> str:
    total, rounds, fresh = run.backlog.events, run.rounds, run.fresh
    plains, services = [r.plain for r in rounds], [r.service for r in rounds]
    ratio = statistics.median(r.ratio for r in rounds)
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    # The round whose service rate is the median: its memory and accounting stand for the rest.
    mid = sorted(rounds, key=lambda r: r.service.per_s)[len(rounds) // 2]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    def accounted(summary: dict[str, Any]) -> tuple[int, int]:
        counted = sum(summary["counts"].values())
        return counted, counted + sum(int(summary[k]) for k in ("late", "invalid", "duplicates"))

    def broker_row(label: str, spans: list[BrokerCpu]) -> str:
        return (
            f"| {label} | {_spread([b.seconds for b in spans], '{:.1f}')} | "
            f"{_spread([b.cpu_seconds for b in spans], '{:.1f}')} | "
            f"{_spread([b.cores for b in spans], '{:.2f}')} | {_pcts([b.share for b in spans])} |"
        )

    per_round = "; ".join(
        f"{i}. {'plain first' if r.plain_first else 'service first'}: {r.plain.per_s:,.0f} / "
        f"{r.service.per_s:,.0f} = {_pct(r.ratio)}"
        for i, r in enumerate(rounds, 1)
    )
    s = mid.service.summary
    counted, all_in = accounted(s)
    mismatched = [i for i, r in enumerate(rounds, 1) if accounted(r.service.summary)[1] != total]
    flat_rounds = sum(r.service.memory.flat for r in rounds)
    sampled = sum(len(r.service.memory.samples) >= 10 for r in rounds)  # a quick run may be too short
    backlog_rate = total / run.backlog.seconds if run.backlog.seconds else 0.0
    heap = os.environ.get("KAFKA_HEAP", "512m")
    lines = [
        f"{total:,} events pre-produced to a {args.partitions}-partition topic on a real Apache Kafka "
        f"{kafka_version()} broker (one KRaft node, {heap} heap, on this box, loopback) in "
        f"{run.backlog.seconds:.1f} s ({backlog_rate:,.0f} events/s); local Redis; {cores} CPUs shared "
        f"by the broker, Redis, the service, the producer and whatever else ran (load average {load:.1f} "
        f"at the end of the run). {len(rounds)} interleaved rounds over that backlog (plain loop and "
        "service alternating first); each cell is the median, min-max in brackets — the spread is the "
        "noise of a shared box.",
        "",
        "| measurement | events/s (wall clock) | events per CPU-second of that process | target |",
        "|---|---:|---:|---|",
        f"| plain aiokafka `getmany` loop: decode (msgspec) + count by type | "
        f"{_spread([p.per_s for p in plains])} | {_spread([p.per_cpu_s for p in plains])} | the ceiling |",
        "| stream service: every window, HLL, funnel, recommendation and risk state, each batch "
        f"flushed to Redis with its offsets | {_spread([v.per_s for v in services])} | "
        f"{_spread([v.per_cpu_s for v in services])} | ≥ 75,000/s: "
        f"{verdict(statistics.median(v.per_s for v in services) >= 75_000)} |",
        f"| service / plain, per round | {_pcts([r.ratio for r in rounds])} | "
        f"{_pcts([r.cpu_ratio for r in rounds])} | ≥ 50 %: {verdict(ratio >= 0.5)} |",
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
        f"The broker's CPU (its JVM's user + system time over each measured span; {cores} cores in the box):",
        "",
        "| phase | wall s | broker CPU s | broker cores busy (CPU s / wall s) | share of the box's cores |",
        "|---|---:|---:|---:|---:|",
        broker_row(
            f"pre-producing the backlog, unthrottled ({backlog_rate:,.0f} events/s)", [run.backlog.broker]
        ),
        broker_row("plain loop draining the backlog", [p.broker("") for p in plains]),
        broker_row("stream service draining the backlog", [v.broker("") for v in services]),
        broker_row(
            f"freshness: producing at {fresh.achieved:,.0f} events/s, the service consuming", [fresh.broker]
        ),
        "",
        f"Over the whole run ({run.seconds:.0f} s) the broker used {run.broker_cpu_seconds:.1f} CPU-seconds "
        f"by /proc/<pid>/stat, {run.broker_jmx_cpu_seconds:.1f} by its JMX exporter's "
        "`process_cpu_seconds_total` (which includes the exporter's own two scrapes).",
        "",
    ]
    if not fresh.sustained:
        lines += [
            f"**The producer did not sustain {fresh.rate:,.0f} events/s on this box**: it achieved "
            f"{fresh.achieved:,.0f} events/s on average, {fresh.slowest_second:,} in its slowest second, "
            f"using {_pct(fresh.producer_cpu_seconds / fresh.seconds)} of a core; the freshness below is at "
            "that rate.",
            "",
        ]
    lines += [
        "| measurement | result | target |",
        "|---|---:|---|",
        f"| producer during the freshness run (librdkafka, one Python thread generating) | "
        f"{fresh.achieved:,.0f} events/s on average, {fresh.slowest_second:,} in the slowest second; "
        f"{_pct(fresh.producer_cpu_seconds / fresh.seconds)} of a core | {fresh.rate:,.0f}/s sustained: "
        f"{verdict(fresh.sustained)} |",
        f"| freshness at {fresh.achieved:,.0f} events/s for {fresh.seconds:.0f} s, produced → visible in "
        f"`/api/analytics/summary` | p50 {_ms(fresh.pct(0.5))}, p99 {_ms(fresh.pct(0.99))}, "
        f"max {_ms(max(fresh.latencies_ms, default=math.nan))} | "
        f"p99 < 1 s: {verdict(fresh.pct(0.99) < 1000)} |",
        f"| service RSS while aggregating {total:,} events (the median round) | "
        f"{mid.service.memory.summary()} | flat (≤ +{FLAT:.0%} after warm-up): "
        + (
            f"{verdict(flat_rounds == len(rounds))} ({flat_rounds} of {len(rounds)} rounds) |"
            if sampled
            else "n/a (too short to sample) |"
        ),
        f"| service RSS during the freshness run | {fresh.memory.summary()} | "
        f"flat (≤ +{FLAT:.0%} after warm-up): {verdict(fresh.memory.flat)} |",
        "",
        _freshness_costs(fresh),
        "",
        f"Every event accounted for by the service (the median round): {counted:,} counted + "
        f"{s['late']:,} late + {s['invalid']:,} invalid + {s['duplicates']:,} duplicates = {all_in:,} of "
        f"{total:,} produced ("
        + ("all, in every round" if not mismatched else f"MISMATCH in round(s) {mismatched}")
        + ").",
    ]
    return "\n".join(lines)


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
        "--plain-loop", nargs=4, metavar=("BOOTSTRAP", "TOPIC", "COUNT", "BROKER_PID"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.plain_loop:
        bootstrap, topic, count, broker_pid = args.plain_loop
        plain_loop(bootstrap, topic, int(count), int(broker_pid))
        return
    if args.quick:
        args.events, args.rounds, args.seconds = 100_000, 3, 10
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    print(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
