"""bench.stream: its pieces against a real Kafka broker, and what its report says about a run.

The whole benchmark takes minutes (``python -m loadtests.bench.stream --quick`` is the smoke run);
here a few thousand events go through the same producer, plain loop and CPU readings.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from asynccore.testing import free_port
from devservers.kafka_broker import KafkaBroker, read_topic
from loadtests.bench import stream as bench
from loadtests.bench.harness import spread
from loadtests.bench.report import deadline


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    with KafkaBroker(metrics_port=free_port()) as broker:
        yield broker


async def test_backlog_is_read_whole_by_the_plain_loop_with_the_brokers_cpu(broker: KafkaBroker) -> None:
    assert broker.pid is not None
    topic = bench.new_topic(broker, "t", 4)
    backlog = await asyncio.to_thread(bench.produce_backlog, broker, topic, 3_000)
    assert backlog.events == 3_000
    assert backlog.broker.cpu_seconds > 0

    plain = bench.Throughput.of_plain(await bench.run_plain_loop(broker.bootstrap, topic, 3_000, broker.pid))
    assert plain.events == 3_000
    assert plain.per_s > 0
    assert plain.broker_cpu_seconds >= 0


async def test_the_paced_producer_starts_its_clock_warm(broker: KafkaBroker) -> None:
    """The freshness run's first events reach the broker as they are produced, not in a burst once
    librdkafka has connected and got its producer id; the warm-up message goes elsewhere."""
    assert broker.pid is not None
    topic, warmup = f"paced-{uuid.uuid4().hex[:8]}", bench.new_topic(broker, "paced-warmup", 1)
    # LogAppendTime: each record's timestamp is when the broker appended it.
    append_time: dict[str, Any] = {"message.timestamp.type": "LogAppendTime"}
    broker.create_topic(topic, 4, **append_time)
    paced = await asyncio.to_thread(
        bench.produce_paced, broker.bootstrap, topic, 2_000, 1.0, broker.pid, warmup
    )
    records = await asyncio.to_thread(read_topic, broker.bootstrap, topic, paced.sent)
    assert len(records) == paced.sent >= 1_900
    assert [m.value() for m in await asyncio.to_thread(read_topic, broker.bootstrap, warmup, 1)] == [
        b"warm-up"
    ]
    appended_ms = sorted(m.timestamp()[1] for m in records)
    # The first 500 events are 0.25 s of production: a cold producer appended them all at once.
    assert appended_ms[499] - appended_ms[0] >= 150


@pytest.mark.parametrize("app", ["quix", "faust"])
async def test_each_alternative_app_counts_a_backlog_exactly_every_time(
    broker: KafkaBroker, app: str
) -> None:
    """Every round runs each app as a fresh consumer group over the same topic: a later run counts it
    exactly too. faust's repartition topic was once shared by every run over one topic, so a later
    run also counted what the runs before it had forwarded (here: the first half twice)."""
    topic = bench.new_topic(broker, f"alt-{app}", 4)
    first = await asyncio.to_thread(bench.produce_backlog, broker, topic, 3_000)
    python = await asyncio.to_thread(bench.alt_python)
    run = await bench.run_alt(app, python, broker.bootstrap, topic, 4, first, 60)
    assert (run.finished, run.exact, run.counted) == (True, True, first.countable)

    second = await asyncio.to_thread(bench.produce_backlog, broker, topic, 3_000)
    whole = bench.Backlog(
        first.events + second.events,
        0.0,
        0.0,
        first.broker,
        _merged(first.truth, second.truth),
        first.countable + second.countable,
    )
    run = await bench.run_alt(app, python, broker.bootstrap, topic, 4, whole, 60)
    assert (run.finished, run.exact, run.mismatches, run.counted) == (True, True, 0, whole.countable)


def _merged(a: bench.Truth, b: bench.Truth) -> bench.Truth:
    out = {kind: dict(minutes) for kind, minutes in a.items()}
    for kind, minutes in b.items():
        for minute, n in minutes.items():
            out.setdefault(kind, {})[minute] = out.get(kind, {}).get(minute, 0) + n
    return out


async def test_jmx_exporter_reports_the_brokers_cpu(broker: KafkaBroker) -> None:
    assert broker.pid is not None
    jmx = await bench.jmx_cpu_seconds(broker.metrics_port)
    assert math.isfinite(jmx)
    # The same process: the exporter's figure and /proc's agree to within a scrape's worth of CPU.
    assert abs(jmx - bench.cpu_seconds(broker.pid)) < 5


async def test_jmx_cpu_is_nan_when_nothing_answers() -> None:
    assert math.isnan(await bench.jmx_cpu_seconds(free_port()))


async def test_broker_request_counts_by_type(broker: KafkaBroker) -> None:
    requests = bench.broker_requests(await bench.scrape(broker.metrics_port))
    assert requests.get("Metadata", 0) > 0  # the fixture's readiness checks asked for metadata


def test_request_counts_of_several_versions_are_summed() -> None:
    name = "kafka_network_requestmetrics_requests_total"
    series = {
        f'{name}{{_objectname="kafka.network<request=Metadata, version=13>",request="Metadata"}}': 8.0,
        f'{name}{{_objectname="kafka.network<request=Metadata, version=5>",request="Metadata"}}': 3.0,
        f'{name}{{request="Produce"}}': 4.0,
        'kafka_network_requestmetrics_totaltimems{quantile="50thPercentile",request="Produce"}': 12.5,
    }
    assert bench.broker_requests(series) == {"Metadata": 11.0, "Produce": 4.0}


def test_broker_cpu_is_cores_busy_and_a_share_of_the_box() -> None:
    span = bench.BrokerCpu("x", seconds=10, cpu_seconds=5)
    assert span.cores == 0.5
    assert span.share == pytest.approx(0.5 / (os.cpu_count() or 1))


def test_spread_is_the_median_then_min_max() -> None:
    assert spread([3.0, 1.0, 2.0]) == "2 (1-3)"
    assert spread([5.0]) == "5"
    assert bench._pcts([0.2, 0.1, 0.4]) == "20 % (10 %-40 %)"


def _run(fresh_rate_achieved: float, slowest: int) -> bench.Run:
    def throughput(per_s: float) -> bench.Throughput:
        summary = {"counts": {"page_view": 990}, "late": 4, "invalid": 3, "duplicates": 3}
        return bench.Throughput(1_000, 1_000 / per_s, 0.5, bench.Memory(), summary, 0.1, 0.2)

    rounds = [
        bench.Round(throughput(200_000), throughput(100_000), plain_first=True),
        bench.Round(throughput(250_000), throughput(90_000), plain_first=False),
        bench.Round(throughput(150_000), throughput(110_000), plain_first=True),
    ]
    fresh = bench.Freshness(
        rate=20_000,
        produced=int(fresh_rate_achieved * 10),
        seconds=10,
        per_second=[slowest] + [int(fresh_rate_achieved)] * 9,
        producer_cpu_seconds=3,
        latencies_ms=[100.0] * 98 + [400.0, math.inf],
        memory=bench.Memory(),
        broker=bench.BrokerCpu("fresh", 10, 4),
        broker_requests_per_s={"Produce": 100.0, "FetchConsumer": 150.0, "Metadata": 0.1},
        flushes=100,
        flush_seconds=5.0,
    )
    backlog = bench.Backlog(1_000, 1.0, 0.8, bench.BrokerCpu("backlog", 1.0, 0.6))
    return bench.Run(backlog, rounds, fresh, 20.0, 21.0, 60.0)


def test_report_gives_medians_noise_ratio_and_broker_share() -> None:
    args = argparse.Namespace(partitions=16)
    text = bench.report(args, _run(20_000, 19_500))
    assert "| 200,000 (150,000-250,000) |" in text  # plain: median (min-max)
    assert "| 100,000 (90,000-110,000) |" in text  # service
    assert "| service / plain, per round | 50 % (36 %-73 %) |" in text  # the median of the ratios
    assert "2. service first: 250,000 / 90,000 = 36 %" in text
    assert "| pre-producing the backlog, unthrottled (1,000 events/s) | 1.0 | 0.6 | 0.60 |" in text
    assert "20,000/s sustained: met" in text
    assert "did not sustain" not in text
    assert "all, in every round" in text
    assert "flushed 100 batches to Redis (about 2,000 events each, 50 ms on average; flushing 50 %" in text
    assert "answered 150 FetchConsumer, 100 Produce requests/s" in text


def test_report_says_when_the_producer_did_not_sustain_the_rate() -> None:
    args = argparse.Namespace(partitions=16)
    text = bench.report(args, _run(15_000, 12_000))
    assert "**The producer did not sustain 20,000 events/s on this box**" in text
    assert "achieved 15,000 events/s on average, 12,000 in its slowest second" in text
    assert "20,000/s sustained: **not met**" in text
    assert "freshness at 15,000 events/s" in text


def test_an_app_stopped_at_the_limit_is_measured_over_what_it_counted() -> None:
    out = bench._AltOutput()
    for line in (
        b'{"progress": 10000, "first_at": 101.0, "at": 110.0}\n',
        b"a log line\n",
        b'{"progress": 20000, "first_at": 101.0, "at": 120.0}\n',
    ):
        out.take(line)
    assert out.result is None
    assert out.progress == (20_000, 101.0, 120.0)
    counted, first_at, at = out.progress
    stopped = bench.AltRun("faust", counted, counted, 100.0, first_at, at, 30.0, False, -1, finished=False)
    assert stopped.per_s == 1_000  # 20,000 counted in the 20 s since launch, not the backlog / the limit
    assert stopped.per_s_counting == 20_000 / 19

    out.take(b'{"counted": 30000, "first_at": 101.0, "done_at": 125.0, "counts": {}}\n')
    assert out.result is not None


def test_the_last_round_lets_a_slow_app_count_the_whole_backlog() -> None:
    args = argparse.Namespace(rounds=3, alt_timeout=240.0, alt_last_timeout=2400.0)
    assert [bench.alt_limit(args, n) for n in (1, 2, 3)] == [240.0, 240.0, 2400.0]
    args.alt_last_timeout = 0.0  # never shorter than the other rounds
    assert bench.alt_limit(args, 3) == 240.0
    # bench-report gives the stream module time for that round on top of the rest (~15 min)
    assert deadline("stream", quick=False) >= bench.ALT_LAST_TIMEOUT_S + 15 * 60
    assert deadline("orders", quick=False) < deadline("stream", quick=False)


def test_cpu_per_event_is_judged_against_the_start_of_the_work_in_the_same_run() -> None:
    run = _run(20_000, 19_500)

    def cpu(process_s: float, redis_s: float) -> bench.Throughput:
        # 1,000 events: 1 ms of the process's CPU is 1 µs an event
        summary = {"counts": {"page_view": 990}, "late": 4, "invalid": 3, "duplicates": 3}
        return bench.Throughput(1_000, 0.01, process_s, bench.Memory(), summary, redis_s, redis_s)

    for round_, (ours, base) in zip(run.rounds, [(9.0, 20.0), (10.0, 19.0), (12.0, 20.0)], strict=True):
        round_.service, round_.base = cpu(ours / 2000, ours / 2000), cpu(base / 2000, base / 2000)
    args = argparse.Namespace(partitions=16, baseline_rev=bench.START_OF_WORK)
    text = bench.report(args, run)
    assert "| service (the start of the work, 4d91965) |" in text
    assert "this tree / that one 0.53 (rounds 0.45, 0.53, 0.60): **not met**" in text
