"""Relay the outbox (a Redis stream) to Kafka: dead letters and risk alerts, at least once.

The flush transaction appends what must be produced (a dead letter, an alert) to the outbox together
with the state change that caused it, so a crash cannot lose one. This relay reads the outbox as a
Redis consumer group, produces each message, and only then acknowledges and deletes it. A relay that
dies holding messages leaves them pending; any relay claims pending messages that have been idle
for ``claim_idle_ms`` and produces them again. Duplicates are possible, loss is not: alerts carry a
deterministic ``alert_id`` and dead letters their source partition and offset, so readers can dedupe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from stream.keys import Keys
from stream.metrics import DLQ

__all__ = ["OutboxRelay"]

log = logging.getLogger("stream.outbox")

GROUP = "relay"
Entry = tuple[bytes, dict[bytes, bytes]]


class OutboxRelay:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        producer: AIOKafkaProducer,
        *,
        name: str,
        dlq_topic: str,
        batch: int = 500,
        idle_poll_s: float = 1.0,
        claim_idle_ms: int = 15_000,
        produce_timeout_s: float = 10.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.producer = producer
        self.name = name
        self.dlq_topic = dlq_topic
        self.batch = batch
        self.idle_poll_s = idle_poll_s
        self.claim_idle_ms = claim_idle_ms
        self.produce_timeout_s = produce_timeout_s
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._group_ready = False

    def wake(self) -> None:
        """Something was just added to the outbox: relay it now rather than at the next poll."""
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Relay until :meth:`stop`; errors (Kafka or Redis away) are logged and retried next round."""
        while not self._stopping.is_set():
            try:
                moved = await self.relay_once()
            except Exception:
                log.exception("outbox relay failed; retrying")
                self._group_ready = False  # the outbox may have been deleted with its group
                moved = 0
            if moved == 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.idle_poll_s):
                        await self._wakeup.wait()
                self._wakeup.clear()

    async def relay_once(self) -> int:
        """Produce one round of outbox messages (stale pending ones first); how many were produced."""
        await self._ensure_group()
        claimed: Any = await self.redis.xautoclaim(
            self.keys.outbox, GROUP, self.name, self.claim_idle_ms, "0-0", count=self.batch
        )
        entries: list[Entry] = [e for e in claimed[1] if e[1]]
        if not entries:
            read: Any = await self.redis.xreadgroup(
                GROUP, self.name, {self.keys.outbox: ">"}, count=self.batch
            )
            entries = read[0][1] if read else []
        if not entries:
            return 0
        async with asyncio.timeout(self.produce_timeout_s):
            sent = [
                await self.producer.send(f[b"t"].decode(), f[b"v"], key=f[b"k"] or None) for _, f in entries
            ]
            await asyncio.gather(*sent)
        ids = [entry_id for entry_id, _ in entries]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.outbox, GROUP, *ids)
            pipe.xdel(self.keys.outbox, *ids)
            await pipe.execute()
        for _, fields in entries:
            if fields[b"t"].decode() == self.dlq_topic:
                DLQ.labels(fields[b"r"].decode()).inc()
        return len(entries)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.keys.outbox, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True
