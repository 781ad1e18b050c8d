"""The outbox relay: one relay produces at a time, each entry exactly once, also across a crash."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from stream_testkit import Topics, outbox_empty

from asynccore.testing import wait_until
from devservers.kafka_broker import KafkaBroker, read_topic
from stream.kafka import new_producer
from stream.keys import Keys
from stream.outbox import ID_HEADER, INSTANCE_HEADER, OutboxRelay


@pytest.fixture
async def producer(kafka: KafkaBroker) -> AsyncIterator[AIOKafkaProducer]:
    made = new_producer(kafka.bootstrap)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


async def add_dead_letters(redis: Redis, keys: Keys, topic: str, names: list[str]) -> list[bytes]:
    """Outbox entries as a flush writes them; the last one has no key. Returns their ids."""
    ids = []
    for i, name in enumerate(names):
        key = "" if i == len(names) - 1 else f"key-{name}"
        fields = {"t": topic, "k": key, "v": f'{{"name": "{name}"}}', "r": "late"}
        # Why the ignore below: redis-py types the fields mapping narrower than the str values it accepts.
        ids.append(await redis.xadd(keys.outbox, fields))  # type: ignore[arg-type]
    return ids


def produced_ids(
    kafka: KafkaBroker, topic: str, expected: int, instance: bytes | None = None
) -> Counter[bytes]:
    """How often each outbox id (of the outbox ``instance``, if given) is in ``topic`` (blocking)."""
    headers = [dict(m.headers() or []) for m in read_topic(kafka.bootstrap, topic, expected)]
    return Counter(h[ID_HEADER] for h in headers if instance is None or h[INSTANCE_HEADER] == instance)


async def test_entries_a_dead_relay_had_produced_are_not_produced_again(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str, producer: AIOKafkaProducer
) -> None:
    keys = Keys(prefix)
    ids = await add_dead_letters(redis, keys, topics.dlq, [f"n{i}" for i in range(7)])

    def relay(name: str, **options: int) -> OutboxRelay:
        return OutboxRelay(
            redis, keys, producer, bootstrap=kafka.bootstrap, name=name, dlq_topic=topics.dlq, **options
        )

    # The first relay takes the four oldest; Kafka acknowledges three of them, but not the third
    # (its send failed), and the relay dies before deleting any, still holding the lease.
    # A round may take a third of the lease: 3 s, for a fresh client reading the real broker's
    # tails on a loaded machine (1 s was seen to run out in CI with the box at load 4).
    dead = relay("dead", batch=4, lease_ms=9000)
    taken = await dead.take()
    assert taken is not None and len(taken.to_produce) == 4
    del taken.to_produce[2]
    await dead.publish(taken)

    # Another outbox (another Redis, say) produced a message with one of these ids to the topic.
    foreign = [(ID_HEADER, ids[5]), (INSTANCE_HEADER, b"another-outbox")]
    await (await producer.send(topics.dlq, b"{}", headers=foreign))

    alive = relay("alive", lease_ms=9000)
    assert await alive.relay_once() == 0  # not while the dead relay's lease runs

    async def drained() -> bool:
        await alive.relay_once()
        return await outbox_empty(redis, prefix)

    await wait_until(drained, timeout=30, message="outbox drained")
    instance = await redis.get(keys.outbox_instance)
    found = await asyncio.to_thread(produced_ids, kafka, topics.dlq, len(ids) + 1, instance)
    assert found == Counter({entry_id: 1 for entry_id in ids})


async def test_one_relay_produces_at_a_time_and_a_stopped_one_hands_over_at_once(
    kafka: KafkaBroker, topics: Topics, redis: Redis, prefix: str, producer: AIOKafkaProducer
) -> None:
    keys = Keys(prefix)
    first, second = (
        OutboxRelay(redis, keys, producer, bootstrap=kafka.bootstrap, name=name, dlq_topic=topics.dlq)
        for name in ("first", "second")
    )
    ids = await add_dead_letters(redis, keys, topics.dlq, ["a", "b", "c"])
    running = asyncio.create_task(first.run())
    try:
        await wait_until(lambda: outbox_empty(redis, prefix), timeout=30, message="first relay produced")
        ids += await add_dead_letters(redis, keys, topics.dlq, ["d", "e"])
        assert await second.relay_once() == 0  # the first one holds the lease
        assert await redis.xlen(keys.outbox) == 2
    finally:
        first.stop()
        await asyncio.wait_for(running, 10)  # a stop releases the lease ...
    # The first relay may have produced d and e before it stopped: f and g come after it for sure.
    ids += await add_dead_letters(redis, keys, topics.dlq, ["f", "g"])
    pending = await redis.xlen(keys.outbox)
    assert pending >= 2
    assert REGISTRY.get_sample_value("stream_outbox_relay_leader") == 0
    # ... so the second takes over without waiting for the lease to run out
    assert await second.relay_once() == pending
    assert REGISTRY.get_sample_value("stream_outbox_relay_leader") == 1
    assert REGISTRY.get_sample_value("stream_outbox_backlog") == 0
    found = await asyncio.to_thread(produced_ids, kafka, topics.dlq, len(ids))
    assert found == Counter({entry_id: 1 for entry_id in ids})
