"""Stored offsets outside the partition's log, against a real broker: records deleted before being
read (retention), a topic recreated under a running member — each a detected, logged, counted reset
under ``STREAM_OFFSET_RESET``, and no record skipped without being counted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from stream_testkit import (
    Topics,
    consumed,
    delete_records,
    now_ms,
    produce_partitions,
    settings_for,
    stored_offsets,
)
from stream_truth import judge, scenario

from asynccore.testing import wait_until
from devservers.kafka_broker import KafkaBroker
from stream import queries
from stream.batch import Checkpoint
from stream.consumer import Consumer
from stream.keys import Keys
from stream.offsets import Policy, Resume, resume_at


@pytest.mark.parametrize(
    ("stored", "policy", "expected"),
    [
        (None, "fail", Resume(Checkpoint(10))),  # never read: from the log start, not a reset
        (Checkpoint(10, 5), "fail", Resume(Checkpoint(10, 5))),
        (Checkpoint(50, 5), "fail", Resume(Checkpoint(50, 5))),  # at the end: nothing new yet
        (Checkpoint(80, 5), "earliest", Resume(Checkpoint(10, 5), "ahead_of_log_end", skipped=0)),
        (Checkpoint(80, 5), "latest", Resume(Checkpoint(50, 5), "ahead_of_log_end", skipped=40)),
        (Checkpoint(80, 5), "fail", Resume(Checkpoint(80, 5), "ahead_of_log_end", halted=True)),
        (Checkpoint(4, 5), "earliest", Resume(Checkpoint(10, 5), "behind_log_start", skipped=6)),
        (Checkpoint(4, 5), "latest", Resume(Checkpoint(50, 5), "behind_log_start", skipped=46)),
        (Checkpoint(4, 5), "fail", Resume(Checkpoint(4, 5), "behind_log_start", halted=True)),
    ],
)
def test_where_a_partition_resumes_in_a_log_from_10_to_50(
    stored: Checkpoint | None, policy: Policy, expected: Resume
) -> None:
    assert resume_at(stored, 10, 50, policy) == expected


@asynccontextmanager
async def consuming(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str, policy: Policy
) -> AsyncIterator[Consumer]:
    consumer = Consumer(settings_for(kafka, topics, prefix, stream_offset_reset=policy), redis)
    running = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stop()
        await asyncio.wait_for(running, 20)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def resets(reason: str) -> tuple[float, float]:
    return (
        sample("stream_offset_resets_total", reason=reason),
        sample("stream_offset_reset_skipped_records_total", reason=reason),
    )


async def counts(redis: Redis, prefix: str) -> dict[str, int]:
    now = now_ms()
    summary = await queries.summary(redis, Keys(prefix), now - 2 * 3_600_000, now + 3_600_000)
    # Why the ignore below: the summary is a JSON document typed as object values.
    return summary["counts"]  # type: ignore[no-any-return]


async def read_then_trim(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str, trimmed: list[int]
) -> tuple[dict[int, list[bytes]], dict[int, list[bytes]]]:
    """100 events per partition read to the end; then 100 more, of which retention deletes the
    first 40 in the ``trimmed`` partitions before the (stopped) consumer reads them."""
    first = scenario(topics.partitions, 100, seed=51)
    second = scenario(topics.partitions, 100, seed=53, t0=now_ms() - 20 * 60_000, ids="s")
    await asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, first)
    async with consuming(kafka, topics, redis, prefix, "earliest"):
        ends = dict.fromkeys(first, 100)
        await wait_until(lambda: consumed(redis, prefix, topics.events, ends), timeout=60, message="consumed")
    await asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, second)
    await asyncio.to_thread(delete_records, kafka.bootstrap, topics.events, dict.fromkeys(trimmed, 140))
    return first, second


async def all_at(redis: Redis, prefix: str, topics: Topics, offsets: dict[int, int]) -> bool:
    stored = await stored_offsets(redis, prefix, topics.events, topics.partitions)
    return all(stored[p] == offset for p, offset in offsets.items())


async def test_records_deleted_before_being_read_resume_at_the_log_start_counted_as_skipped(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    everything = list(range(topics.partitions))
    first, second = await read_then_trim(kafka, topics, redis, prefix, everything)
    resets_before, skipped_before = resets("behind_log_start")
    with caplog.at_level(logging.WARNING, logger="stream.consumer"):
        async with consuming(kafka, topics, redis, prefix, "earliest"):
            ends = dict.fromkeys(everything, 200)
            await wait_until(lambda: all_at(redis, prefix, topics, ends), timeout=60, message="consumed")
    assert resets("behind_log_start") == (
        resets_before + topics.partitions,
        skipped_before + 40 * topics.partitions,
    )
    warnings = [r for r in caplog.records if "offset reset (behind_log_start)" in r.getMessage()]
    assert len(warnings) == topics.partitions and {r.levelno for r in warnings} == {logging.WARNING}
    line = f"{topics.events}[0] stored offset 100 is outside its log [140, 200]; policy earliest: resuming at"
    assert any(line in r.getMessage() for r in warnings)
    truth = judge({p: first[p] + second[p][40:] for p in first}, now_ms())
    assert await counts(redis, prefix) == truth.counts


async def test_latest_resumes_at_the_log_end_and_counts_every_record_it_skips(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str
) -> None:
    everything = list(range(topics.partitions))
    first, _ = await read_then_trim(kafka, topics, redis, prefix, everything)
    resets_before, skipped_before = resets("behind_log_start")
    async with consuming(kafka, topics, redis, prefix, "latest"):
        ends = dict.fromkeys(everything, 200)
        await wait_until(lambda: all_at(redis, prefix, topics, ends), timeout=60, message="moved to the end")
    # 40 deleted and 60 jumped over, per partition.
    assert resets("behind_log_start") == (
        resets_before + topics.partitions,
        skipped_before + 100 * topics.partitions,
    )
    assert await counts(redis, prefix) == judge(first, now_ms()).counts


async def test_fail_stops_that_partition_only_until_the_policy_allows_a_reset(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = await read_then_trim(kafka, topics, redis, prefix, [3])
    others = {p: 200 for p in range(topics.partitions) if p != 3}
    resets_before, skipped_before = resets("behind_log_start")
    with caplog.at_level(logging.ERROR, logger="stream.consumer"):
        async with consuming(kafka, topics, redis, prefix, "fail") as consumer:
            await wait_until(
                lambda: all_at(redis, prefix, topics, others), timeout=60, message="others consumed"
            )
            assert consumer.halted == [3]
            assert 3 not in consumer.assigned
            position = {"topic": topics.events, "partition": "3"}
            assert REGISTRY.get_sample_value("stream_consumer_position", position) == 100
    assert (await stored_offsets(redis, prefix, topics.events, topics.partitions))[3] == 100  # untouched
    assert resets("behind_log_start") == (resets_before + 1, skipped_before)  # detected, nothing skipped yet
    [error] = [r for r in caplog.records if "offset reset (behind_log_start)" in r.getMessage()]
    assert error.levelno == logging.ERROR and "is not consumed" in error.getMessage()
    assert REGISTRY.get_sample_value("stream_consumer_position", position) is None  # gone with the member

    async with consuming(kafka, topics, redis, prefix, "earliest"):
        await wait_until(lambda: all_at(redis, prefix, topics, {3: 200}), timeout=60, message="3 consumed")
    assert resets("behind_log_start") == (resets_before + 2, skipped_before + 40)
    parts = {p: first[p] + (second[p][40:] if p == 3 else second[p]) for p in first}
    assert await counts(redis, prefix) == judge(parts, now_ms()).counts


async def test_a_topic_recreated_under_a_running_member_is_a_reset_and_its_new_log_counts(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str
) -> None:
    before = scenario(topics.partitions, 100, seed=61)
    after = scenario(topics.partitions, 50, seed=67, t0=now_ms() - 20 * 60_000, ids="n")
    resets_before, skipped_before = resets("ahead_of_log_end")
    async with consuming(kafka, topics, redis, prefix, "earliest"):
        await asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, before)
        ends = dict.fromkeys(before, 100)
        await wait_until(lambda: consumed(redis, prefix, topics.events, ends), timeout=60, message="consumed")
        await asyncio.to_thread(kafka.delete_topic, topics.events)
        await asyncio.to_thread(kafka.create_topic, topics.events, topics.partitions)
        await asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, after)
        new_ends = dict.fromkeys(after, 50)
        await wait_until(
            lambda: all_at(redis, prefix, topics, new_ends), timeout=90, message="new log consumed"
        )
    assert resets("ahead_of_log_end") == (resets_before + topics.partitions, skipped_before)
    truth = judge({p: before[p] + after[p] for p in before}, now_ms())
    assert await counts(redis, prefix) == truth.counts
