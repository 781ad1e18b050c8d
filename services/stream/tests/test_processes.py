"""Real service processes: SIGKILL one mid-stream, or lose one of two group members — the totals
still equal the ground truth exactly (offsets are stored with the aggregates, in one transaction)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import aiohttp
import confluent_kafka
import orjson
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from stream_testkit import MockKafka, Topics, consumed, now_ms, produce_partitions, read_topic, stored_total
from stream_truth import Truth, judge, scenario

from asynccore.testing import ServiceProcess, free_port, wait_until


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
        ends = {p: len(v) for p, v in parts.items()}
        await wait_until(lambda: consumed(redis, prefix, topics.events, ends), timeout=90, message="consumed")
        truth = judge(parts, now_ms())
        await assert_ground_truth(port, truth)
        # Every dead letter once: none lost with the killed process, none produced by both.
        letters = await asyncio.to_thread(read_topic, kafka.bootstrap, topics.dlq, len(truth.dead_letters))
        found = sorted((d["partition"], d["offset"]) for d in (orjson.loads(m.value()) for m in letters))
        assert found == sorted(truth.dead_letters)
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
