"""Real service processes: SIGKILL one mid-stream, lose one of two group members, cut Redis or take
the Kafka broker down mid-stream — the totals still equal the ground truth exactly (offsets are
stored with the aggregates, in one transaction) and every dead letter is produced once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from urllib.parse import urlsplit

import aiohttp
import confluent_kafka
import orjson
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from stream_testkit import (
    REDIS_URL,
    MockKafka,
    Topics,
    consumed,
    now_ms,
    produce_partitions,
    read_topic,
    stored_total,
)
from stream_truth import Truth, judge, scenario

from asynccore.testing import ServiceProcess, TcpProxy, free_port, wait_until


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


async def assigned(port: int) -> set[str]:
    """The partitions a service process reports lag for, i.e. holds."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    return {
        s.labels["partition"]
        for family in text_string_to_metric_families(text)
        if family.name == "stream_consumer_lag"
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
    found = sorted((d["partition"], d["offset"]) for d in (orjson.loads(m.value()) for m in letters))
    assert found == sorted(truth.dead_letters)


async def test_sigkill_mid_stream_then_restart_counts_exactly(
    kafka: MockKafka, topics: Topics, redis: Redis, prefix: str, stream_env: dict[str, str]
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
    kafka: MockKafka, topics: Topics, redis: Redis, prefix: str, stream_env: dict[str, str]
) -> None:
    parts = scenario(topics.partitions, 5000, seed=23)
    total = sum(len(v) for v in parts.values())
    first, first_port = service(stream_env, STREAM_BATCH_MAX="200")
    second, second_port = service(stream_env, STREAM_BATCH_MAX="200")
    everything = {str(p) for p in range(topics.partitions)}
    await first.start()
    try:
        # The second joins a settled group: two members joining at the same moment can keep the
        # mock broker's coordinator rebalancing for tens of seconds before the group settles.
        await wait_until(
            lambda: _holds(first_port, everything), timeout=60, message="the first member holds all"
        )
        await second.start()

        async def split() -> bool:
            a, b = await assigned(first_port), await assigned(second_port)
            return bool(a) and bool(b) and not a & b and a | b == everything

        # ~10 s on an idle machine; the mock coordinator's rebalance stretches a lot under CPU load.
        await wait_until(split, timeout=120, message="both members hold partitions")
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


async def _holds(port: int, partitions: set[str]) -> bool:
    return await assigned(port) == partitions


async def _above(redis: Redis, prefix: str, topics: Topics, n: int) -> bool:
    return await stored_total(redis, prefix, topics.events, topics.partitions) > n


async def test_loadgen_stops_within_a_second_of_sigterm_even_when_the_broker_went_first() -> None:
    """``make run`` stops the whole process group at once: the broker may be gone before the
    generator's last messages are delivered, and waiting for them must not outlast the stop."""
    broker = MockKafka()
    try:
        broker.create_topic("loadgen", 2)
        gen = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "stream.loadgen",
            "--rate",
            "2000",
            "--duration",
            "60",
            "--topic",
            "loadgen",
            env={**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap},
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await wait_until(
                lambda: _produced_more_than(broker.bootstrap, "loadgen", 100),
                timeout=30,
                message="the generator is producing",
            )
            broker.close()
            gen.send_signal(signal.SIGTERM)
            async with asyncio.timeout(1.5):
                _, err = await gen.communicate()
            assert gen.returncode == 0
            assert b'"produced"' in err
        finally:
            if gen.returncode is None:
                gen.kill()
                await gen.wait()
    finally:
        broker.close()


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


async def status_of(port: int, method: str, path: str, body: object = None) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.request(method, f"http://127.0.0.1:{port}{path}", json=body) as resp,
    ):
        return resp.status, await resp.json()


async def _answers(port: int, method: str, path: str, status: int, field: str) -> bool:
    """Whether ``path`` answers ``status`` naming ``field`` (in ``errors``, or failing in /readyz)."""
    got, body = await status_of(port, method, path, {"events": [NEW_EVENT]} if method == "POST" else None)
    return got == status and field in (body.get("errors") or body.get("failing") or {})


NEW_EVENT = {"event_id": "after-the-outage", "type": "payment", "user_id": "u-late", "ts": 0, "price": 5.0}


async def test_redis_cut_mid_stream_is_a_503_then_processing_resumes_exactly(
    kafka: MockKafka, topics: Topics, redis: Redis, prefix: str, stream_env: dict[str, str]
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


async def test_kafka_broker_down_mid_stream_then_back_loses_and_repeats_nothing(
    redis: Redis, prefix: str, stream_env: dict[str, str]
) -> None:
    broker = MockKafka()  # its own: this one goes down
    topics = Topics(f"events-{prefix[-13:-1]}", f"dlq-{prefix[-13:-1]}", f"alerts-{prefix[-13:-1]}", 8)
    for name, partitions in ((topics.events, 8), (topics.dlq, 2), (topics.alerts, 2)):
        broker.create_topic(name, partitions)
    env = {
        **stream_env,
        "KAFKA_BOOTSTRAP": broker.bootstrap,
        "STREAM_TOPIC": topics.events,
        "STREAM_DLQ_TOPIC": topics.dlq,
        "STREAM_ALERTS_TOPIC": topics.alerts,
    }
    parts = scenario(topics.partitions, 6000, seed=9)
    total = sum(len(v) for v in parts.values())
    await asyncio.to_thread(produce_partitions, broker.bootstrap, topics.events, parts)
    proc, port = service(env, STREAM_BATCH_MAX="50")
    try:
        await proc.start()
        await wait_until(lambda: _above(redis, prefix, topics, total // 4), timeout=60, message="a quarter")
        broker.set_down()
        assert await stored_total(redis, prefix, topics.events, topics.partitions) < total, "not mid-stream"
        # Ingest needs Kafka: a 503 naming it, within the request timeout. Reads come from Redis.
        await wait_until(
            lambda: _answers(port, "POST", "/api/events", 503, "kafka"), timeout=30, message="503"
        )
        assert (await status_of(port, "GET", "/api/analytics/summary"))[0] == 200
        broker.set_up()
        await assert_exact_at_the_end(port, redis, prefix, topics, broker.bootstrap, parts)
    finally:
        await proc.stop()
        broker.close()
