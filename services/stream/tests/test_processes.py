"""Real service processes: SIGKILL one mid-stream, lose one of two group members, cut Redis or
SIGKILL the Kafka broker mid-stream — the totals still equal the ground truth exactly (offsets are
stored with the aggregates, in one transaction) and every dead letter is produced once. A topic
recreated under a stored offset is a detected, counted reset, and the new log is counted."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import aiohttp
import confluent_kafka
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from stream_testkit import (
    REDIS_URL,
    Topics,
    consumed,
    ingest_auth,
    now_ms,
    produce_partitions,
    stored_offsets,
    stored_total,
)
from stream_truth import Truth, judge, scenario

from asynccore.testing import ServiceProcess, TcpProxy, free_port, metric_value, wait_until
from devservers.kafka_broker import KafkaBroker, metadata_answers, read_topic


@pytest.fixture(scope="module")
def own_kafka() -> Iterator[KafkaBroker]:
    """A broker for the tests that kill it (the session's is shared); each finds it running."""
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture
def expendable_kafka(own_kafka: KafkaBroker) -> KafkaBroker:
    if not metadata_answers(own_kafka.bootstrap):
        own_kafka.start()  # killed by the test before
    return own_kafka


def service(env: dict[str, str], **extra: str) -> tuple[ServiceProcess, int]:
    port = free_port()
    proc = ServiceProcess(
        [sys.executable, "-m", "stream"],
        env={**env, "STREAM_PORT": str(port), **extra},
        health_url=f"http://127.0.0.1:{port}/healthz",
        name=f"stream-{port}",
    )
    return proc, port


async def get_json(port: int, path: str) -> dict:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def metrics_text(port: int) -> str:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        return await resp.text()


async def assigned(port: int) -> set[str]:
    """The partitions a service process reports a position for, i.e. holds."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    return {
        s.labels["partition"]
        for family in text_string_to_metric_families(text)
        if family.name == "stream_consumer_position"
        for s in family.samples
    }


async def assert_ground_truth(port: int, truth: Truth) -> None:
    now = now_ms()
    summary = await get_json(port, f"/api/analytics/summary?from={now - 2 * 3_600_000}&to={now + 3_600_000}")
    assert summary["counts"] == truth.counts
    assert summary["revenue"] == round(truth.revenue_cents / 100, 2)
    assert (summary["late"], summary["invalid"], summary["duplicates"]) == (
        truth.late,
        truth.invalid,
        truth.duplicates,
    )


async def assert_exact_at_the_end(
    port: int, redis: Redis, prefix: str, topics: Topics, bootstrap: str, parts: dict[int, list[bytes]]
) -> None:
    """Once every partition's end is stored: the totals equal the ground truth, and every dead
    letter is in the DLQ exactly once (none lost, none produced twice)."""
    ends = {p: len(v) for p, v in parts.items()}
    await wait_until(lambda: consumed(redis, prefix, topics.events, ends), timeout=90, message="consumed")
    truth = judge(parts, now_ms())
    await assert_ground_truth(port, truth)
    letters = await asyncio.to_thread(read_topic, bootstrap, topics.dlq, len(truth.dead_letters))
    # A probe POSTed while Kafka was away was answered 503 but may still be delivered once it is
    # back (the producer retries; a client retry is deduplicated): its dead letter is not the scenario's.
    probe = f'"event_id":"{NEW_EVENT["event_id"]}"'
    dead = [d for d in (orjson.loads(m.value()) for m in letters) if probe not in d["event"]]
    found = sorted((d["partition"], d["offset"]) for d in dead)
    assert found == sorted(truth.dead_letters)


async def test_sigkill_mid_stream_then_restart_counts_exactly(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str, stream_env: dict[str, str]
) -> None:
    parts = scenario(topics.partitions, 5000, seed=11)
    total = sum(len(v) for v in parts.values())
    proc, port = service(stream_env, STREAM_BATCH_MAX="200")
    await proc.start()
    try:
        producing = asyncio.create_task(
            asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, parts, per_second=10_000)
        )
        await wait_until(
            lambda: _above(redis, prefix, topics, total // 4), timeout=60, message="a quarter consumed"
        )
        proc.kill(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
        assert await stored_total(redis, prefix, topics.events, topics.partitions) < total, "not mid-stream"
        await producing
        await proc.start()
        # Every dead letter once: none lost with the killed process, none produced by both.
        await assert_exact_at_the_end(port, redis, prefix, topics, kafka.bootstrap, parts)
    finally:
        await proc.stop()


async def test_two_members_split_partitions_and_the_survivor_takes_over(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str, stream_env: dict[str, str]
) -> None:
    parts = scenario(topics.partitions, 5000, seed=23)
    total = sum(len(v) for v in parts.values())
    first, first_port = service(stream_env, STREAM_BATCH_MAX="200")
    second, second_port = service(stream_env, STREAM_BATCH_MAX="200")
    everything = {str(p) for p in range(topics.partitions)}
    await asyncio.gather(first.start(), second.start())
    try:

        async def split() -> bool:
            a, b = await assigned(first_port), await assigned(second_port)
            return bool(a) and bool(b) and not a & b and a | b == everything

        await wait_until(split, timeout=60, message="both members hold partitions")
        producing = asyncio.create_task(
            asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, parts, per_second=10_000)
        )
        await wait_until(lambda: _above(redis, prefix, topics, total // 4), timeout=60, message="a quarter")
        first.kill(signal.SIGKILL)
        await first.wait()
        await producing
        ends = {p: len(v) for p, v in parts.items()}
        await wait_until(lambda: consumed(redis, prefix, topics.events, ends), timeout=90, message="consumed")
        assert await assigned(second_port) == everything
        await assert_ground_truth(second_port, judge(parts, now_ms()))
    finally:
        await asyncio.gather(first.stop(), second.stop())


async def _above(redis: Redis, prefix: str, topics: Topics, n: int) -> bool:
    return await stored_total(redis, prefix, topics.events, topics.partitions) > n


async def status_of(port: int, method: str, path: str, body: object = None) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.request(
            method,
            f"http://127.0.0.1:{port}{path}",
            json=body,
            headers=ingest_auth() if method == "POST" else None,
        ) as resp,
    ):
        return resp.status, await resp.json()


async def _answers(port: int, method: str, path: str, status: int, field: str) -> bool:
    """Whether ``path`` answers ``status`` naming ``field`` (in ``errors``, or failing in /readyz)."""
    got, body = await status_of(port, method, path, {"events": [NEW_EVENT]} if method == "POST" else None)
    return got == status and field in (body.get("errors") or body.get("failing") or {})


NEW_EVENT = {"event_id": "after-the-outage", "type": "payment", "user_id": "u-late", "ts": 0, "price": 5.0}


async def test_redis_cut_mid_stream_is_a_503_then_processing_resumes_exactly(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str, stream_env: dict[str, str]
) -> None:
    parts = scenario(topics.partitions, 4000, seed=5)
    total = sum(len(v) for v in parts.values())
    shared = urlsplit(REDIS_URL)
    proxy = TcpProxy(shared.hostname or "127.0.0.1", shared.port or 6379)
    await proxy.start()
    proc, port = service(
        {**stream_env, "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"}, STREAM_BATCH_MAX="200"
    )
    await proc.start()
    try:
        producing = asyncio.create_task(
            asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, parts, per_second=8_000)
        )
        await wait_until(lambda: _above(redis, prefix, topics, total // 4), timeout=60, message="a quarter")
        await proxy.cut()
        # Every answer lives in Redis: the API says it is unavailable (never a 500), and so does /readyz.
        await wait_until(
            lambda: _answers(port, "GET", "/api/analytics/summary", 503, "redis"), timeout=20, message="503"
        )
        assert await _answers(port, "GET", "/readyz", 503, "redis")
        cut_at = await stored_total(redis, prefix, topics.events, topics.partitions)
        assert cut_at < total, "not mid-stream"
        await producing
        await proxy.restore()
        await assert_exact_at_the_end(port, redis, prefix, topics, kafka.bootstrap, parts)
    finally:
        await proc.stop()
        await proxy.close()


# Two service processes, a broker SIGKILLed and restarted (~7 s), every event checked: ~60-90 s on a
# busy 2-core box, so more than the suite's 120 s default is needed only when it is very busy.
@pytest.mark.timeout(300)
async def test_kafka_broker_sigkill_mid_stream_then_restart_loses_and_repeats_nothing(
    expendable_kafka: KafkaBroker, redis: Redis, prefix: str, stream_env: dict[str, str]
) -> None:
    broker = expendable_kafka  # not the session's: this one crashes
    run = prefix[-13:-1]
    topics = Topics(f"events-{run}", f"dlq-{run}", f"alerts-{run}", 8)
    env = {
        **stream_env,
        "KAFKA_BOOTSTRAP": broker.bootstrap,
        "STREAM_TOPIC": topics.events,
        "STREAM_DLQ_TOPIC": topics.dlq,
        "STREAM_ALERTS_TOPIC": topics.alerts,
        "STREAM_PARTITIONS": str(topics.partitions),  # the service creates its topics
    }
    parts = scenario(topics.partitions, 6000, seed=9)
    total = sum(len(v) for v in parts.values())
    proc, port = service(env, STREAM_BATCH_MAX="50")
    try:
        await proc.start()
        await asyncio.to_thread(produce_partitions, broker.bootstrap, topics.events, parts)
        await wait_until(lambda: _above(redis, prefix, topics, total // 4), timeout=60, message="a quarter")
        await asyncio.to_thread(broker.kill)
        assert await stored_total(redis, prefix, topics.events, topics.partitions) < total, "not mid-stream"
        # Ingest needs Kafka: a 503 naming it, within the request timeout. Reads come from Redis.
        await wait_until(
            lambda: _answers(port, "POST", "/api/events", 503, "kafka"), timeout=30, message="503"
        )
        assert (await status_of(port, "GET", "/api/analytics/summary"))[0] == 200
        await asyncio.to_thread(broker.start)
        await assert_exact_at_the_end(port, redis, prefix, topics, broker.bootstrap, parts)
        assert metric_value(await metrics_text(port), "stream_offset_resets_total") == 0
    finally:
        await proc.stop()


async def test_topic_recreated_while_stopped_is_a_counted_reset_and_the_new_log_counts(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str, stream_env: dict[str, str]
) -> None:
    """The ``make run`` case: state kept in Redis, the topic gone and created afresh. Its offsets
    restart from 0, below the stored ones: none of its records may pass for one already counted."""
    before = scenario(topics.partitions, 1500, seed=41)
    after = scenario(topics.partitions, 500, seed=43, t0=now_ms() - 10 * 60_000, ids="r")
    await asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, before)
    proc, port = service(stream_env)
    await proc.start()
    try:
        ends = {p: len(v) for p, v in before.items()}
        await wait_until(lambda: consumed(redis, prefix, topics.events, ends), timeout=60, message="consumed")
        await proc.stop()
        await asyncio.to_thread(kafka.delete_topic, topics.events)
        await asyncio.to_thread(kafka.create_topic, topics.events, topics.partitions)
        await asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, after)
        await proc.start()

        new_ends = {p: len(v) for p, v in after.items()}

        async def reset_and_consumed() -> bool:
            return await stored_offsets(redis, prefix, topics.events, topics.partitions) == new_ends

        await wait_until(reset_and_consumed, timeout=60, message="the new log consumed from its start")
        # Partition by partition the new log continues the old one (watermark and dedup included).
        await assert_ground_truth(port, judge({p: before[p] + after[p] for p in before}, now_ms()))
        text = await metrics_text(port)
        resets = metric_value(text, "stream_offset_resets_total", reason="ahead_of_log_end")
        assert resets == topics.partitions
        assert metric_value(text, "stream_offset_reset_skipped_records_total", reason="ahead_of_log_end") == 0
        warnings = [line for line in proc.output.splitlines() if "offset reset (ahead_of_log_end)" in line]
        assert len(warnings) == topics.partitions
        assert all(" WARNING " in line and "policy earliest" in line for line in warnings), warnings
        assert f"{topics.events}[0] stored offset {len(before[0])} is outside its log [0, 500]" in proc.output
    finally:
        await proc.stop()


async def test_loadgen_stops_within_a_second_of_sigterm_even_when_the_broker_went_first(
    expendable_kafka: KafkaBroker, prefix: str
) -> None:
    """``make run`` stops the whole process group at once: the broker may be gone before the
    generator's last messages are delivered, and waiting for them must not outlast the stop."""
    broker = expendable_kafka  # not the session's: this one is killed
    topic = f"loadgen-{prefix[-13:-1]}"
    gen = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stream.loadgen",
        "--rate",
        "2000",
        "--duration",
        "60",
        "--topic",
        topic,
        "--partitions",
        "2",
        env={**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until(
            lambda: _produced_more_than(broker.bootstrap, topic, 100),
            timeout=30,
            message="the generator is producing",
        )
        await asyncio.to_thread(broker.kill)
        gen.send_signal(signal.SIGTERM)
        async with asyncio.timeout(1.5):
            _, err = await gen.communicate()
        assert gen.returncode == 0
        assert b'"produced"' in err
    finally:
        if gen.returncode is None:
            gen.kill()
            await gen.wait()


async def _produced_more_than(bootstrap: str, topic: str, n: int) -> bool:
    def high_watermarks() -> int:
        config = {"bootstrap.servers": bootstrap, "group.id": "marks", "log_level": 4}
        consumer = confluent_kafka.Consumer(config)
        try:
            metadata = consumer.list_topics(topic, timeout=5).topics[topic]
            return sum(
                consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=5)[1]
                for p in metadata.partitions
            )
        finally:
            consumer.close()

    return await asyncio.to_thread(high_watermarks) > n
