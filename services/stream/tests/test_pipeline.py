"""The consumer and the outbox relay in this process, against a real Kafka broker and real Redis:
what lands in Redis (and in the API's answers) is the independently computed ground truth."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from stream_testkit import (
    Topics,
    consumed,
    now_ms,
    outbox_empty,
    produce_partitions,
    settings_for,
    stored_total,
)
from stream_truth import judge, scenario

from asynccore.testing import wait_until
from devservers.kafka_broker import KafkaBroker, read_topic
from stream import queries
from stream.consumer import Consumer
from stream.kafka import new_producer
from stream.keys import Keys
from stream.outbox import OutboxRelay

Run = Callable[[dict[int, list[bytes]]], Awaitable[None]]


@pytest.fixture
async def pipeline(kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str) -> AsyncIterator[Run]:
    """``await run(parts)``: produce ``parts`` and process them to the end with a consumer and a relay."""
    settings = settings_for(kafka, topics, prefix, stream_batch_max=300)
    producer = new_producer(kafka.bootstrap)
    await producer.start()
    relay = OutboxRelay(
        redis, Keys(prefix), producer, bootstrap=kafka.bootstrap, name="test", dlq_topic=topics.dlq
    )
    consumer = Consumer(settings, redis, on_flushed=lambda *_: relay.wake())
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(relay.run())]

    async def run(parts: dict[int, list[bytes]]) -> None:
        await asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, parts)
        ends = {p: len(v) for p, v in parts.items()}
        await wait_until(lambda: consumed(redis, prefix, topics.events, ends), timeout=60, message="consumed")

    try:
        yield run
    finally:
        consumer.stop()
        relay.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        await producer.stop()


async def test_counts_equal_ground_truth_and_dead_letters_reach_the_dlq(
    pipeline: Run, kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str
) -> None:
    parts = scenario(topics.partitions, 1000)
    await pipeline(parts)
    truth = judge(parts, now_ms())

    now = now_ms()
    summary = await queries.summary(redis, Keys(prefix), now - 2 * 3_600_000, now + 3_600_000)
    assert summary["counts"] == truth.counts
    assert summary["revenue"] == round(truth.revenue_cents / 100, 2)
    assert (summary["late"], summary["invalid"], summary["duplicates"]) == (
        truth.late,
        truth.invalid,
        truth.duplicates,
    )
    assert summary["unique_users"] == pytest.approx(len(truth.users), rel=0.03)  # HyperLogLog
    # Why the ignore below: the summary is a JSON document typed as object values.
    assert sum(summary["lateness"].values()) == truth.total()  # type: ignore[attr-defined]

    messages = await asyncio.to_thread(read_topic, kafka.bootstrap, topics.dlq, len(truth.dead_letters))
    letters = [orjson.loads(m.value()) for m in messages]
    assert {(d["partition"], d["offset"]) for d in letters} == truth.dead_letters
    reasons = {d["reason"] for d in letters}
    assert reasons == {"late", "bad_json", "schema", "future_ts"}
    assert await outbox_empty(redis, prefix)  # relayed, then deleted


def event(
    event_id: str, kind: str, user: str, product: str | None, ts: int, price: float | None = None
) -> bytes:
    body: dict[str, object] = {"event_id": event_id, "type": kind, "user_id": user, "ts": ts}
    if product is not None:
        body["product_id"] = product
    if price is not None:
        body["price"] = price
    return orjson.dumps(body)


async def test_windows_funnel_recommendations_and_risk_alerts(
    pipeline: Run, kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str
) -> None:
    minute = (now_ms() // 60_000 - 3) * 60_000  # three minutes ago, well inside the lateness
    values = []
    for i, product in enumerate(["a", "b", "c", "a", "b", "a"]):  # one session: a, b, c, a, b, a
        values.append(event(f"v{i}", "page_view", "shopper", product, minute + i))
    values += [
        event("c1", "add_to_cart", "shopper", "a", minute + 10),
        event("o1", "order_placed", "shopper", "a", minute + 11, 25.5),
    ]
    # order_velocity: 7 orders in one minute (threshold 5) → one alert; 5 orders → none.
    values += [event(f"bo{i}", "order_placed", "bot", "z", minute + 100 + i, 1.0) for i in range(7)]
    values += [event(f"ok{i}", "order_placed", "busy", "z", minute + 100 + i, 1.0) for i in range(5)]
    # cart_spree: 9 distinct products (threshold 8) in one 10 s bucket, one of them added twice.
    values += [event(f"cs{i}", "add_to_cart", "spree", f"s{i % 9}", minute + 20_000 + i) for i in range(10)]
    await pipeline({0: values})

    keys = Keys(prefix)
    top = await queries.top_products(redis, keys, "views", 2, minute)
    assert top["products"] == [{"product_id": "a", "count": 3}, {"product_id": "b", "count": 2}]
    assert (await queries.top_products(redis, keys, "purchases", 1, minute + 4 * 60_000))["products"] == [
        {"product_id": "z", "count": 12}
    ]
    funnel = await queries.funnel(redis, keys, minute, minute + 60_000)
    assert funnel["stages"] == {"view": 1, "cart": 2, "order": 3}

    recs = await queries.top_co_viewed(redis, keys, "a", k=5, now_ms=minute, half_life_s=3600, horizon_h=24)
    # One session: a, b and c each co-viewed once with a (re-views add nothing).
    assert recs == [{"product_id": "b", "score": 1.0}, {"product_id": "c", "score": 1.0}]

    alerts = await queries.list_alerts(redis, keys, limit=10)
    assert sorted((a["rule"], a["user_id"], a["count"]) for a in alerts) == [
        ("cart_spree", "spree", 9),
        ("order_velocity", "bot", 7),
    ]
    published = await asyncio.to_thread(read_topic, kafka.bootstrap, topics.alerts, 2)
    assert sorted(orjson.loads(m.value())["alert_id"] for m in published) == sorted(
        a["alert_id"] for a in alerts
    )
    assert {m.key() for m in published} == {b"spree", b"bot"}


async def test_a_full_outbox_holds_flushes_back_until_the_relay_drains_it(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str
) -> None:
    """With no relay (as while Kafka refuses its messages), dead letters pile up to the limit and
    the consumer stops flushing rather than trimming them; a relay then drains it and nothing is lost."""
    parts = scenario(topics.partitions, 400)
    truth = judge(parts, now_ms())
    limit = 10
    settings = settings_for(kafka, topics, prefix, stream_batch_max=50, stream_outbox_max=limit)
    keys = Keys(prefix)
    producer = new_producer(kafka.bootstrap)
    await producer.start()
    consumer = Consumer(settings, redis)
    relay = OutboxRelay(redis, keys, producer, bootstrap=kafka.bootstrap, name="late", dlq_topic=topics.dlq)
    tasks = [asyncio.create_task(consumer.run())]
    try:
        await asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, parts)
        await wait_until(
            lambda: REGISTRY.get_sample_value("stream_outbox_full") == 1, timeout=30, message="flushes wait"
        )
        records = sum(len(values) for values in parts.values())
        assert await stored_total(redis, prefix, topics.events, topics.partitions) < records
        assert limit <= await redis.xlen(keys.outbox) < limit + 50  # one batch past the limit at most

        tasks.append(asyncio.create_task(relay.run()))
        ends = {p: len(v) for p, v in parts.items()}
        await wait_until(lambda: consumed(redis, prefix, topics.events, ends), timeout=60, message="consumed")
        await wait_until(lambda: outbox_empty(redis, prefix), timeout=20, message="outbox drained")
    finally:
        consumer.stop()
        relay.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        await producer.stop()
    assert REGISTRY.get_sample_value("stream_outbox_full") == 0
    now = now_ms()
    summary = await queries.summary(redis, keys, now - 2 * 3_600_000, now + 3_600_000)
    assert summary["counts"] == truth.counts
    messages = await asyncio.to_thread(read_topic, kafka.bootstrap, topics.dlq, len(truth.dead_letters))
    letters = [orjson.loads(m.value()) for m in messages]
    assert sorted((d["partition"], d["offset"]) for d in letters) == sorted(truth.dead_letters)


async def test_a_stop_while_flushes_wait_on_the_outbox_loses_nothing(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str
) -> None:
    """Stopped while a batch waits on a full outbox, the consumer must flush nothing judged after
    it, even if the outbox drains at that moment: a restarted consumer then counts everything."""
    parts = scenario(topics.partitions, 1500, seed=3)
    truth = judge(parts, now_ms())
    keys = Keys(prefix)
    await redis.xadd(keys.outbox, {"t": topics.dlq, "k": "", "v": "{}", "r": "late"})  # full at 1
    first = Consumer(settings_for(kafka, topics, prefix, stream_outbox_max=1), redis)
    running = asyncio.create_task(first.run())
    producing = asyncio.create_task(
        asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, parts, per_second=2_000)
    )
    try:
        await wait_until(
            lambda: REGISTRY.get_sample_value("stream_outbox_full") == 1, timeout=30, message="flushes wait"
        )
        first.stop()
        await redis.delete(keys.outbox)  # the outbox drains just as the consumer stops
        await asyncio.wait_for(running, 20)
    finally:
        await producing
    records = sum(len(values) for values in parts.values())
    assert await stored_total(redis, prefix, topics.events, topics.partitions) < records, "not mid-stream"
    await _run_to_the_end(kafka, topics, redis, prefix, parts)
    now = now_ms()
    summary = await queries.summary(redis, keys, now - 2 * 3_600_000, now + 3_600_000)
    assert summary["counts"] == truth.counts


async def _run_to_the_end(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str, parts: dict[int, list[bytes]]
) -> None:
    """A fresh consumer (and relay) on the same state, until every partition's end is stored."""
    producer = new_producer(kafka.bootstrap)
    await producer.start()
    relay = OutboxRelay(
        redis, Keys(prefix), producer, bootstrap=kafka.bootstrap, name="end", dlq_topic=topics.dlq
    )
    consumer = Consumer(settings_for(kafka, topics, prefix), redis)
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(relay.run())]
    try:
        ends = {p: len(v) for p, v in parts.items()}
        await wait_until(lambda: consumed(redis, prefix, topics.events, ends), timeout=60, message="consumed")
    finally:
        consumer.stop()
        relay.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        await producer.stop()


async def test_freshness_position_and_lag_follow_the_partitions_held(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str
) -> None:
    """Freshness is the age of the newest event aggregated: NaN with none (never a perfect 0), growing
    while nothing arrives, and read back with the offsets after a restart. The position is the stored
    offset, the lag what the log holds beyond it; both go with the partition."""
    settings = settings_for(kafka, topics, prefix)
    everything = list(range(topics.partitions))
    at_0 = {"topic": topics.events, "partition": "0"}

    def freshness() -> float:
        return REGISTRY.get_sample_value("stream_freshness_seconds") or 0.0

    consumer = Consumer(settings, redis)
    running = asyncio.create_task(consumer.run())
    try:
        await wait_until(lambda: consumer.assigned == everything, timeout=30, message="assigned")
        assert math.isnan(freshness())
        assert REGISTRY.get_sample_value("stream_consumer_position", at_0) == 0
        values = [event("fresh-1", "page_view", "u1", "p1", now_ms() - 30_000)]
        await asyncio.to_thread(produce_partitions, kafka.bootstrap, topics.events, {0: values})
        await wait_until(
            lambda: consumed(redis, prefix, topics.events, {0: 1}), timeout=30, message="consumed"
        )
        # The member takes the new checkpoint (and its newest event time) once the flush's Redis
        # transaction has answered, a moment after another client can read the offset there.
        await wait_until(lambda: not math.isnan(freshness()), timeout=5, message="freshness set")
        aged = freshness()
        assert 30 <= aged < 60
        await wait_until(lambda: freshness() >= aged + 0.5, timeout=5, message="freshness grows")
        assert REGISTRY.get_sample_value("stream_consumer_position", at_0) == 1
        assert REGISTRY.get_sample_value("stream_consumer_lag", {"partition": "0"}) == 0
    finally:
        consumer.stop()
        await asyncio.wait_for(running, 20)
    assert REGISTRY.get_sample_value("stream_consumer_position", at_0) is None

    restarted = Consumer(settings, redis)
    running = asyncio.create_task(restarted.run())
    try:
        await wait_until(lambda: restarted.assigned == everything, timeout=30, message="assigned again")
        assert freshness() >= aged
    finally:
        restarted.stop()
        await asyncio.wait_for(running, 20)
