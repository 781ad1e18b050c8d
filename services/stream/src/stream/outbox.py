"""Relay the outbox (a Redis stream) to Kafka: dead letters and risk alerts, each produced once.

The flush transaction appends what must be produced (a dead letter, an alert) to the outbox together
with the state change that caused it, so a crash cannot lose one. Producing it exactly once takes
two more rules:

- **One relay at a time.** Every replica runs a relay, but only the holder of a lease in Redis
  produces; the others wait to take over when it stops renewing (a crash) or releases it (a stop).
  The leader renews the lease right before each round it produces (a round ends well inside it),
  produces in outbox order, each message tagged with its outbox id and the outbox's own random id,
  and once Kafka has acknowledged the round, deletes those entries. Sends aiokafka is still
  retrying (Kafka away) keep the lease held and the next round waiting until they settle.
- **Kafka is asked what it already holds.** A relay that dies after Kafka acknowledged a round but
  before deleting it leaves entries that are already produced. So a relay that has just taken the
  lease, or whose round failed, first reads the tail of each partition it produces to (``TAIL``
  messages, more than a round puts there): an entry whose outbox id is found there is deleted
  without being produced again, and one that is not found is produced, even if a later one landed.

What this does not cover: a leader frozen for longer than the lease whose in-flight produce requests
land after its successor read the tails (a stalled machine, not a slow broker: the round is bounded
well inside the lease renewed just before it), and ids pushed out of a partition's tail by more
than ``TAIL`` messages from other producers (a duplicate, not a loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from stream.keys import Keys
from stream.metrics import DLQ, OUTBOX_BACKLOG, RELAY_LEADER

__all__ = ["OutboxRelay", "Round"]

log = logging.getLogger("stream.outbox")

ID_HEADER = "outbox-id"  # the entry's Redis stream id, e.g. b"1732530000000-0"
INSTANCE_HEADER = "outbox"  # the random id of the outbox it came from (see Keys.outbox_instance)
TAIL = 1000  # messages read back per partition for the ids this outbox produced (> a round's batch)

# KEYS: the lease, the outbox's instance id. ARGV: this relay's name, lease ms, an instance id to use
# if the outbox has none yet. Returns {1 = renewed | 2 = newly taken | 0 = held by another, instance}.
_LEAD_LUA = """
redis.call('SET', KEYS[2], ARGV[3], 'NX')
local instance = redis.call('GET', KEYS[2])
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return {1, instance} end
if holder then return {0, instance} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {2, instance}
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(slots=True)
class Message:
    entry_id: bytes
    topic: str
    key: bytes | None
    value: bytes
    reason: str


@dataclass(slots=True)
class Round:
    """Entries taken from the outbox: those to produce, and all of them to delete once produced."""

    to_produce: list[Message]
    entry_ids: list[bytes]


class OutboxRelay:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        producer: AIOKafkaProducer,
        *,
        bootstrap: str,
        name: str,
        dlq_topic: str,
        batch: int = 500,
        idle_poll_s: float = 1.0,
        lease_ms: int = 30_000,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.producer = producer
        self.bootstrap = bootstrap
        self.name = f"{name}:{uuid.uuid4().hex[:8]}"  # a restarted process is a new holder
        self.dlq_topic = dlq_topic
        if batch >= TAIL:
            raise ValueError(f"batch must stay below TAIL ({TAIL}): a round must fit in the tail read back")
        self.batch = batch
        self.idle_poll_s = idle_poll_s
        self.lease_ms = lease_ms
        self.round_timeout_s = lease_ms / 3000  # a round ends well inside the lease it started in
        self._published: dict[str, set[bytes]] = {}  # topic → outbox ids found in its partitions' tails
        self._instance = b""  # the outbox's random id, as its messages carry it
        self._unsettled: list[asyncio.Future[Any]] = []  # sends of a failed round, still in aiokafka
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()

    def wake(self) -> None:
        """Something was just added to the outbox: relay it now rather than at the next poll."""
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Relay until :meth:`stop`; errors (Kafka or Redis away) are logged and retried next round."""
        try:
            while not self._stopping.is_set():
                try:
                    moved = await self.relay_once()
                except Exception:
                    log.exception("outbox relay failed; retrying")
                    self._published.clear()  # what the failed round produced is read from Kafka again
                    moved = 0
                if moved == 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.idle_poll_s):
                            await self._wakeup.wait()
                    self._wakeup.clear()
        finally:
            RELAY_LEADER.set(0)
            OUTBOX_BACKLOG.set(0)
            if all(f.done() for f in self._unsettled):  # else the lease runs out while aiokafka retries
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.idle_poll_s):
                        await self.redis.eval(_RELEASE_LUA, 1, self.keys.relay_lease, self.name)

    async def relay_once(self) -> int:
        """One round if this relay holds the lease: how many outbox entries it settled."""
        taken = await self.take()
        if taken is None:
            return 0
        if taken.to_produce:
            if await self._lead() != 1:  # lost (or lost and retaken) while reading Kafka's tails
                self._published.clear()
                return 0
            await self.publish(taken)  # within round_timeout_s, a third of the lease just renewed
        await self.settle(taken)
        OUTBOX_BACKLOG.dec(len(taken.entry_ids))
        return len(taken.entry_ids)

    async def take(self) -> Round | None:
        """Take the lease (or renew it) and the oldest outbox entries; ``None`` if there is nothing
        this relay may produce now."""
        if await self._lead() == 0:
            OUTBOX_BACKLOG.set(0)
            return None
        OUTBOX_BACKLOG.set(await self.redis.xlen(self.keys.outbox))
        if self._unsettled:  # an earlier round's sends, which aiokafka retries until Kafka answers
            _, pending = await asyncio.wait(self._unsettled, timeout=self.idle_poll_s)
            self._unsettled = list(pending)
            if pending:
                return None  # the lease stays held (renewed every round) until they settle
            self._published.clear()  # some may have landed since the tails were read
        entries: Any = await self.redis.xrange(self.keys.outbox, count=self.batch)
        if not entries:
            return None
        to_produce = []
        for entry_id, fields in entries:
            topic = fields[b"t"].decode()
            if entry_id not in await self._found_in_kafka(topic):
                to_produce.append(
                    Message(entry_id, topic, fields[b"k"] or None, fields[b"v"], fields[b"r"].decode())
                )
        return Round(to_produce, [entry_id for entry_id, _ in entries])

    async def publish(self, taken: Round) -> None:
        """Produce a round's messages in outbox order and wait until Kafka has acknowledged them all."""
        sent: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.round_timeout_s):
                for m in taken.to_produce:
                    headers = [(ID_HEADER, m.entry_id), (INSTANCE_HEADER, self._instance)]
                    sent.append(await self.producer.send(m.topic, m.value, key=m.key, headers=headers))
                if sent:
                    await asyncio.wait(sent)  # a timeout cancels this wait, not the sends
        finally:
            self._unsettled = [f for f in sent if not f.done()]
        for acked in sent:
            acked.result()  # the first failure, if any

    async def settle(self, taken: Round) -> None:
        """Delete a produced round from the outbox."""
        await self.redis.xdel(self.keys.outbox, *taken.entry_ids)
        for m in taken.to_produce:
            if m.topic == self.dlq_topic:
                DLQ.labels(m.reason).inc()

    async def _lead(self) -> int:
        """Renew or take the lease: 1 renewed, 2 newly taken, 0 held by another relay."""
        lead, instance = await self.redis.eval(
            _LEAD_LUA,
            2,
            self.keys.relay_lease,
            self.keys.outbox_instance,
            self.name,
            self.lease_ms,
            uuid.uuid4().hex,
        )
        RELAY_LEADER.set(1 if lead else 0)
        if lead == 2 or instance != self._instance:
            self._published.clear()  # a predecessor may have produced since, or the outbox is new
            self._instance = instance
        return int(lead)

    async def _found_in_kafka(self, topic: str) -> set[bytes]:
        """The outbox ids of this outbox in the tails of ``topic``'s partitions (read once per lease)."""
        known = self._published.get(topic)
        if known is None:
            known = self._published[topic] = await self._read_tails(topic)
        return known

    async def _read_tails(self, topic: str) -> set[bytes]:
        found: set[bytes] = set()
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        async with asyncio.timeout(self.round_timeout_s):
            try:
                await reader.start()
                tps = [TopicPartition(topic, p) for p in sorted(await self.producer.partitions_for(topic))]
                reader.assign(tps)
                first, end = await reader.beginning_offsets(tps), await reader.end_offsets(tps)
                left = {tp for tp in tps if end[tp] > first[tp]}
                for tp in left:
                    reader.seek(tp, max(first[tp], end[tp] - TAIL))
                while left:
                    fetched = await reader.getmany(*left, timeout_ms=100)
                    for records in fetched.values():
                        for record in records:
                            headers = dict(record.headers)
                            if headers.get(INSTANCE_HEADER) == self._instance and ID_HEADER in headers:
                                found.add(headers[ID_HEADER])
                    left = {tp for tp in left if await reader.position(tp) < end[tp]}
            finally:
                await reader.stop()
        return found
