"""The outbox relay: what a dead relay had taken is produced by another one; nothing is lost."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from stream_testkit import MockKafka, Topics, read_topic

from asynccore.testing import wait_until
from stream.kafka import new_producer
from stream.keys import Keys
from stream.outbox import GROUP, OutboxRelay


async def test_messages_a_dead_relay_held_are_claimed_and_produced(
    kafka: MockKafka, topics: Topics, redis: Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    for i in range(5):
        fields = {"t": topics.dlq, "k": f"k{i}", "v": f'{{"n": {i}}}', "r": "late"}
        await redis.xadd(keys.outbox, fields)  # type: ignore[arg-type]
    await redis.xgroup_create(keys.outbox, GROUP, id="0")
    # A relay reads three of them and dies before producing: they stay pending, owned by it.
    taken = await redis.xreadgroup(GROUP, "dead-relay", {keys.outbox: ">"}, count=3)
    assert len(taken[0][1]) == 3

    producer = new_producer(kafka.bootstrap)
    await producer.start()
    try:
        relay = OutboxRelay(redis, keys, producer, name="alive", dlq_topic=topics.dlq, claim_idle_ms=200)
        assert await relay.relay_once() == 2  # the two nobody had taken

        async def drained() -> bool:  # once the dead relay's three have been idle for 200 ms
            await relay.relay_once()
            return await redis.xlen(keys.outbox) == 0

        await wait_until(drained, timeout=10, message="outbox drained")
    finally:
        await producer.stop()
    messages = await asyncio.to_thread(read_topic, kafka.bootstrap, topics.dlq, 5)
    assert sorted(m.key() for m in messages) == [f"k{i}".encode() for i in range(5)]
