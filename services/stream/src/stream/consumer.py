"""One consumer-group member: fetch a batch → judge it → aggregate it → flush it with its checkpoints.

The flush (:meth:`Consumer._commit`) is three steps in one transaction: read the state store →
build the write set (pure, :mod:`stream.writes`) → apply it with the new checkpoints
(:mod:`stream.state`). Most of the write set is built before (:meth:`Consumer._plan`), while the
batch before is still being flushed: Redis and this process work at the same time. Checkpoints
live in Redis next to the aggregates; Kafka's committed offsets are never used. On assignment the
member checks each checkpoint against the partition's log and seeks to it, or resets it under
``STREAM_OFFSET_RESET`` (see :mod:`stream.offsets`); a log that moves under a running member (fetch
out of range) is checked the same way. On revocation it
finishes the batch in hand first (the rebalance waits on the same lock), so a partition changes
hands between batches. Should a flush still race a new owner, the WATCH fence rejects it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError
from redis.asyncio import Redis

from stream import state
from stream.aggregate import Deltas
from stream.batch import Checkpoint, Prepared, Record, prepare
from stream.keys import Keys
from stream.metrics import (
    ALERTS,
    DUPLICATES,
    EVENTS,
    FLUSH_SECONDS,
    FRESHNESS,
    INVALID,
    LAG,
    LATE,
    LATENESS,
    OUTBOX_FULL,
    POSITION,
    RESET_SKIPPED,
    RESETS,
)
from stream.offsets import Resume, resume_at
from stream.settings import StreamSettings
from stream.state import Fenced, load_checkpoints, move_checkpoints
from stream.writes import Draft, Plan, ReadGroup, Totals, build_writes, draft_writes, plan

__all__ = ["Consumer", "PartitionState"]

log = logging.getLogger("stream.consumer")

START_TIMEOUT_S = 30.0
MAX_RESTART_DELAY_S = 10.0
# How long fetches may find a newly assigned partition unpositioned before the member rejoins: the
# listener's reads take milliseconds, a few seconds on a broker or Redis that is struggling.
POSITION_WAIT_S = 30.0
FILL_WAIT_MS = 5  # how long one more fetch into the next batch may wait while a flush runs
# Records judged at a time while a flush runs: the flush's next step (building the write set once
# the read is back, sending the apply) waits for this thread, and Redis idles meanwhile.
PIECE_MAX = 2_000
OUTBOX_POLL_S = 0.5  # how often a full outbox is looked at again (backpressure)
OFFSETS_TIMEOUT_S = 30.0  # asking the broker for the logs' start and end offsets on assignment
# A topic recreated (or given more partitions) is noticed within this: aiokafka's 5-minute default
# left a member idle that long after its topic came back.
METADATA_MAX_AGE_MS = 30_000
RESET_ATTEMPTS = 3  # a reset fenced by the previous owner's last flush is decided again on fresh offsets

_LogOffsets = dict[TopicPartition, int]  # the start or end offset of each partition's log


@dataclass(slots=True, eq=False)
class PartitionState:
    """A partition this member holds, as it stands.

    Each (re)assignment makes a new object, and a revocation drops it: a batch remembers the objects
    it was judged from, and is void once any of them is no longer the one held (:meth:`Consumer._current`).
    """

    checkpoint: Checkpoint  # committed with the aggregates: where processing resumes after a crash
    stored: str | None  # its checkpoint key's value as last read or written: what a flush fences on
    judged: Checkpoint | None  # where the judged, not yet flushed batch leaves off; None: judge no further
    halted: bool = False  # STREAM_OFFSET_RESET=fail: held (paused) but not consumed


class Consumer:
    def __init__(
        self,
        settings: StreamSettings,
        redis: Redis,
        *,
        on_flushed: Callable[[Totals, list[str]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = Keys(settings.stream_redis_prefix)
        self.topic = settings.stream_topic
        self._on_flushed = on_flushed
        self._lock = asyncio.Lock()  # a batch in flight vs. a rebalance
        self._partitions: dict[int, PartitionState] = {}  # every partition held
        self._failure: Exception | None = None  # from the rebalance listener, raised by the member loop
        self._unpositioned_since: float | None = None  # see _await_positions
        self._stopping = asyncio.Event()
        self._flushed: _Flushed | None = None  # the batch flushed last (see _plan)
        FRESHNESS.set_function(self._freshness)

    def _freshness(self) -> float:
        """Age of the newest event aggregated from the partitions held (stored with their checkpoints, so
        it survives a restart and grows while nothing arrives); NaN while none has any: "no data"
        must not read as "perfectly fresh", and NaN fails every threshold comparison."""
        newest = max((p.checkpoint.max_ts for p in self._partitions.values() if not p.halted), default=0)
        return max(0.0, time.time() - newest / 1000) if newest else math.nan

    @property
    def assigned(self) -> list[int]:
        return sorted(p for p, st in self._partitions.items() if not st.halted)

    @property
    def halted(self) -> list[int]:
        return sorted(p for p, st in self._partitions.items() if st.halted)

    def stop(self) -> None:
        """Leave the group after the batch in hand (if any) has been flushed."""
        self._stopping.set()

    async def run(self) -> None:
        """Be a group member until :meth:`stop`; if Kafka or Redis fails, rejoin after a growing pause."""
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self._member()
                delay = 0.5
            except Exception:
                log.exception("consumer failed; rejoining in %.1fs", delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
                delay = min(delay * 2, MAX_RESTART_DELAY_S)

    async def _member(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.stream_group_id,
            client_id=f"stream-{s.stream_port}",
            enable_auto_commit=False,
            # Positions come from Redis; a position the log no longer holds raises instead of
            # aiokafka resetting it silently, and is checked like a stored offset on assignment.
            auto_offset_reset="none",
            # fetch_max_wait_ms stays aiokafka's 500 ms: the broker answers a waiting fetch as soon as
            # a record arrives (freshness p50 ~10 ms at 200 and 2,000 events/s with 100 or 500 ms).
            session_timeout_ms=s.stream_session_timeout_ms,
            heartbeat_interval_ms=s.stream_heartbeat_ms,
            request_timeout_ms=max(40_000, s.stream_session_timeout_ms + 5_000),
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        consumer.subscribe([self.topic], listener=_Rebalance(self, consumer))
        self._failure = None  # a previous member's
        self._unpositioned_since = None
        in_flight: asyncio.Task[None] | None = None
        self._flushed = None
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await consumer.start()
            while not self._stopping.is_set():
                if (failure := self._failure) is not None:
                    raise failure
                try:
                    judged = await self._fetch(consumer, in_flight)
                except NoOffsetForPartitionError as exc:
                    await self._await_positions(exc)
                    continue
                except OffsetOutOfRangeError as exc:
                    # The log moved under this member (topic recreated, records deleted): once the
                    # batch in flight is stored, every position is checked as on assignment.
                    log.warning("fetch out of range %s: checking the stored checkpoints", exc.args[0])
                    if in_flight is not None:
                        await in_flight
                        in_flight = None
                    async with self._lock:
                        await self._assign(consumer, sorted(self._partitions))
                    continue
                except Exception:
                    if (failure := self._failure) is not None:  # the cause (positions not set), not this
                        raise failure from None
                    raise
                self._unpositioned_since = None
                # Planned (and most of its write set built) while the batch in flight is in Redis.
                job = self._plan(judged) if judged is not None else None
                if in_flight is not None:
                    await in_flight
                    in_flight = None
                if job is not None:
                    in_flight = self._start_flush(consumer, job)
                self._report_lag(consumer)
            if in_flight is not None:
                await in_flight
        finally:
            if in_flight is not None and not in_flight.done():
                in_flight.cancel()
                await asyncio.gather(in_flight, return_exceptions=True)
            self._forget(sorted(self._partitions))
            with contextlib.suppress(Exception):
                async with asyncio.timeout(START_TIMEOUT_S):
                    await consumer.stop()

    async def _await_positions(self, exc: NoOffsetForPartitionError) -> None:
        """A fetch raced a rebalance: a partition was assigned whose listener is still reading its
        checkpoint (Redis, the log's bounds). Wait for the listener, not a rejoin (a rejoin
        rebalances the whole group into the same race); give up after ``POSITION_WAIT_S``."""
        now = time.monotonic()
        if self._unpositioned_since is None:
            self._unpositioned_since = now
        elif now - self._unpositioned_since > POSITION_WAIT_S:
            raise exc
        async with self._lock:  # held by the listener while it positions the partitions
            pass
        await asyncio.sleep(0.05)  # the listener may not have taken the lock yet

    async def _fetch(self, consumer: AIOKafkaConsumer, in_flight: asyncio.Task[None] | None) -> _Job | None:
        """The next batch, judged; ``None`` if nothing arrived within ``STREAM_POLL_MS``.

        Two stages: while batch N is flushed (Redis working), batch N+1 is fetched and judged (this
        process working), in as many fetches as arrive before N has committed: the longer a flush
        takes, the bigger the next batch, and a flush's Redis work grows with the distinct keys it
        touches, not with its events. N+1 starts its flush once N has. Records already fetched
        (buffered by aiokafka) join the batch even with no flush to wait for, without waiting for
        more: while draining a backlog, batches are as full as the fetcher allows from the start
        rather than growing with the flush time.

        The flush runs on this thread too, and ``getmany`` returns buffered records without yielding
        to it: while a flush runs, records are judged ``PIECE_MAX`` at a time, and before each piece
        the flush takes its next step if it can (:func:`_let_flush_on`), so that Redis and this
        process work at the same time rather than by turns.
        """
        s = self.settings
        busy = in_flight is not None and not in_flight.done()
        if busy:
            await _let_flush_on()
        piece = min(s.stream_batch_max, PIECE_MAX) if busy else s.stream_batch_max
        batch = await consumer.getmany(timeout_ms=s.stream_poll_ms, max_records=piece)
        judged = self._judge(batch, None) if batch else None
        while judged is not None and (room := s.stream_batch_max - judged.prepared.records) > 0:
            waiting = in_flight is not None and not in_flight.done()
            if waiting:
                await _let_flush_on()
            more = await consumer.getmany(
                timeout_ms=FILL_WAIT_MS if waiting else 0,
                max_records=min(room, PIECE_MAX) if waiting else room,
            )
            if more:
                judged = self._judge(more, judged)
            elif not waiting:
                break
        if judged is not None and in_flight is not None and not in_flight.done():
            await _let_flush_on()  # before the batch is planned
        return judged

    def _judge(self, batch: dict[TopicPartition, list[ConsumerRecord]], into: _Job | None) -> _Job:
        """Judge fetched records, continuing from where the batch in flight (or ``into``) leaves off.

        A piece judged before a rebalance or a fence moved the positions starts a new batch: what
        was judged before is void (its records are fetched again from the stored checkpoints).
        """
        s = self.settings
        if into is not None and not self._current(into):
            into = None
        by_partition: dict[int, list[Record]] = {tp.partition: recs for tp, recs in batch.items()}
        judged_to = {p: st.judged for p, st in self._partitions.items() if st.judged is not None}
        prepared = prepare(
            by_partition,
            judged_to,
            now_ms=time.time_ns() // 1_000_000,
            lateness_ms=int(s.stream_allowed_lateness_s * 1000),
            max_future_ms=int(s.stream_max_future_s * 1000),
            into=into.prepared if into is not None else None,
        )
        job = into if into is not None else _Job(prepared, Deltas(s.stream_dedup_horizon_s * 1000))
        for partition, checkpoint in prepared.checkpoints.items():
            st = job.judged_from[partition] = self._partitions[partition]
            st.judged = checkpoint
        job.deltas.add(prepared)
        return job

    def _current(self, job: _Job) -> bool:
        """Whether every partition in ``job`` is still held as it was when judged: a revocation, a
        reassignment (a fence, a log that moved) or a stop mid-backpressure voids the whole batch."""
        held = self._partitions
        return all(held.get(p) is st for p, st in job.judged_from.items())

    def _plan(self, job: _Job) -> _Job | None:
        """What the flush of a judged batch reads first, and the part of its write set that does not
        depend on the read; ``None`` if no assigned partition is in it.

        The seen ids of the batch flushed last count as stored if it was judged from the same
        partition states: it commits before this batch's read, or else both are void
        (:class:`~stream.writes.NotStored` should that ever not hold).
        """
        s = self.settings
        if not job.prepared.checkpoints or not self._current(job):
            return None
        job.plan = plan(job.deltas, self.keys, s.stream_rec_session_gap_s * 1000)
        stored = None
        if (before := self._flushed) is not None and _chained(before.judged_from, job):
            stored = {group.key: set(group.members) for group in before.seen}
        job.draft = draft_writes(
            job.prepared, job.deltas, job.plan, self.keys, self.topic, s, stored_before=stored
        )
        return job

    def _start_flush(self, consumer: AIOKafkaConsumer, job: _Job) -> asyncio.Task[None]:
        assert job.plan is not None
        self._flushed = _Flushed(job.judged_from, job.plan.seen)
        return asyncio.create_task(self._flush(consumer, job))

    async def _flush(self, consumer: AIOKafkaConsumer, job: _Job) -> None:
        """Commit a judged batch, unless backpressure or a rebalance voids it first."""
        if not await self._outbox_room(job):
            return
        async with self._lock:
            if not self._current(job):
                return  # judged before a rebalance or a fence moved the positions: it is re-read
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.settings.stream_flush_timeout_s):
                    totals, fired = await self._commit(job)
            except Fenced as exc:
                log.warning("batch dropped: %s; re-reading from the stored checkpoints", exc)
                await self._assign(consumer, sorted(self._partitions))
                return
            FLUSH_SECONDS.observe(time.perf_counter() - started)
            for partition, checkpoint in job.prepared.checkpoints.items():
                st = self._partitions[partition]
                st.checkpoint, st.stored = checkpoint, checkpoint.encode()
                POSITION.labels(self.topic, str(partition)).set(checkpoint.offset)
        _count(totals, fired)
        if self._on_flushed is not None:
            self._on_flushed(totals, fired)

    async def _commit(self, job: _Job) -> tuple[Totals, list[str]]:
        """Read the state store → build the write set → apply it with the new checkpoints, in one
        transaction fenced on the checkpoints this member last wrote (:class:`Fenced` otherwise)."""
        s, keys, prepared, the_plan = self.settings, self.keys, job.prepared, job.plan
        assert the_plan is not None
        expected = {p: st.stored if (st := self._partitions.get(p)) else None for p in prepared.checkpoints}
        async with state.transaction(self.redis, keys, self.topic, expected) as tx:
            found = await tx.read(the_plan)
            writes, totals = build_writes(
                prepared, job.deltas, the_plan, found, keys, self.topic, s, draft=job.draft
            )
            fired = await tx.apply(
                writes, alerts_kept=s.stream_alerts_kept, alerts_topic=s.stream_alerts_topic
            )
        return totals, fired

    async def _outbox_room(self, job: _Job) -> bool:
        """Backpressure: wait while the outbox holds ``STREAM_OUTBOX_MAX`` messages or more; False if
        the batch is void.

        The relay empties the outbox into Kafka. While it cannot (Kafka away, a topic missing), flushes
        wait here instead of trimming undelivered dead letters and alerts: consumption is delayed,
        nothing is dropped. The outbox may pass the limit by what one batch per consumer adds. A stop
        while waiting leaves the batch unflushed: it is read again from the stored checkpoints.
        """
        limit = self.settings.stream_outbox_max
        backlog = await self.redis.xlen(self.keys.outbox)
        if backlog < limit:
            return True
        log.warning("outbox holds %d messages (limit %d): flushes wait for the relay", backlog, limit)
        OUTBOX_FULL.set(1)
        try:
            while backlog >= limit:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(OUTBOX_POLL_S):
                        await self._stopping.wait()
                if not self._current(job):
                    return False  # a rebalance moved the positions meanwhile
                if self._stopping.is_set():
                    # Nothing after this batch may be flushed: judging stops (no partition has a
                    # position to continue from), the next batch is void (new states) and all of
                    # it is read again on restart.
                    self._partitions = {p: replace(st, judged=None) for p, st in self._partitions.items()}
                    return False
                backlog = await self.redis.xlen(self.keys.outbox)
        finally:
            OUTBOX_FULL.set(0)
        log.info("outbox down to %d messages: flushing again", backlog)
        return True

    async def _assign(self, consumer: AIOKafkaConsumer, partitions: list[int]) -> None:
        """Position ``partitions`` where processing resumes: the stored checkpoints, checked against
        the log's start and end, reset (in Redis too) under ``STREAM_OFFSET_RESET`` when outside it.

        Called under the lock. Whatever was judged but not flushed is void: every partition held gets
        a new :class:`PartitionState`.
        """
        assigned = consumer.assignment()
        tps = {p: tp for p in partitions if (tp := TopicPartition(self.topic, p)) in assigned}
        self._forget([p for p in partitions if p not in tps])  # revoked meanwhile
        stored, starts, ends, resumes = await self._resume_points(consumer, tps)
        # A rebalance during those reads may have taken partitions away: seeking one would raise
        # ("partition is not assigned") and make the member rejoin, rebalancing the group again.
        now_assigned = consumer.assignment()
        self._forget([p for p, tp in tps.items() if tp not in now_assigned])
        for p, tp in tps.items():
            if tp not in now_assigned:
                continue
            resume = resumes[p]
            if resume.reason is not None:
                self._report_reset(
                    p, Checkpoint.decode(stored[p] or "0").offset, resume, starts[tp], ends[tp]
                )
            POSITION.labels(self.topic, str(p)).set(resume.checkpoint.offset)
            if resume.halted:
                self._partitions[p] = PartitionState(resume.checkpoint, stored[p], None, halted=True)
                consumer.seek(tp, ends[tp])  # any valid position: a paused partition is not fetched
                consumer.pause(tp)
                with contextlib.suppress(KeyError):
                    LAG.remove(str(p))
                continue
            consumer.resume(tp)
            # A reset rewrote the stored checkpoint: the flush now fences on the new value.
            written = resume.checkpoint.encode() if resume.reason is not None else stored[p]
            self._partitions[p] = PartitionState(resume.checkpoint, written, None)
            consumer.seek(tp, resume.checkpoint.offset)
            LAG.labels(str(p)).set(max(0, ends[tp] - resume.checkpoint.offset))
        # An eager rebalance moves every partition at once: the ones not repositioned here restart
        # from their checkpoints too, as new states (their batch in hand is void with the rest).
        self._partitions = {
            p: PartitionState(st.checkpoint, st.stored, None if st.halted else st.checkpoint, st.halted)
            for p, st in self._partitions.items()
        }

    async def _resume_points(
        self, consumer: AIOKafkaConsumer, tps: dict[int, TopicPartition]
    ) -> tuple[dict[int, str | None], _LogOffsets, _LogOffsets, dict[int, Resume]]:
        """The stored checkpoints, the logs' starts and ends, and where each partition resumes; a
        reset is written back, fenced, before it is acted on (decided again if a flush moved it)."""
        for attempt in range(1, RESET_ATTEMPTS + 1):
            stored = await load_checkpoints(self.redis, self.keys, self.topic, list(tps))
            async with asyncio.timeout(OFFSETS_TIMEOUT_S):
                starts = await consumer.beginning_offsets(list(tps.values())) if tps else {}
                ends = await consumer.end_offsets(list(tps.values())) if tps else {}
            resumes = {
                p: resume_at(
                    Checkpoint.decode(value) if (value := stored[p]) else None,
                    starts[tp],
                    ends[tp],
                    self.settings.stream_offset_reset,
                )
                for p, tp in tps.items()
            }
            moves = {
                p: (stored[p], resume.checkpoint.encode())
                for p, resume in resumes.items()
                if resume.reason is not None and not resume.halted
            }
            try:
                await move_checkpoints(self.redis, self.keys, self.topic, moves)
                break
            except Fenced:
                if attempt == RESET_ATTEMPTS:
                    raise
        return stored, starts, ends, resumes

    def _report_reset(
        self, partition: int, stored: int, resume: Resume, log_start: int, log_end: int
    ) -> None:
        """Log (WARNING; ERROR when the partition halts) and count a stored offset outside its log."""
        policy = self.settings.stream_offset_reset
        RESETS.labels(resume.reason).inc()
        if resume.skipped:
            RESET_SKIPPED.labels(resume.reason).inc(resume.skipped)
        outcome = (
            "the partition is not consumed until its stored offset is fixed "
            "or STREAM_OFFSET_RESET is earliest or latest"
            if resume.halted
            else f"resuming at {resume.checkpoint.offset}, {resume.skipped} records skipped"
        )
        log.log(
            logging.ERROR if resume.halted else logging.WARNING,
            "offset reset (%s): %s[%d] stored offset %d is outside its log [%d, %d]; policy %s: %s",
            resume.reason,
            self.topic,
            partition,
            stored,
            log_start,
            log_end,
            policy,
            outcome,
            extra={
                "topic": self.topic,
                "partition": partition,
                "stored_offset": stored,
                "log_start": log_start,
                "log_end": log_end,
                "policy": policy,
                "reason": resume.reason,
                "skipped": resume.skipped,
            },
        )

    def _forget(self, partitions: list[int]) -> None:
        """Drop partitions no longer held; whatever was judged from them but not flushed is void."""
        for partition in partitions:
            self._partitions.pop(partition, None)
            with contextlib.suppress(KeyError):
                LAG.remove(str(partition))
            with contextlib.suppress(KeyError):
                POSITION.remove(self.topic, str(partition))

    def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        for partition, st in self._partitions.items():
            if st.halted:
                continue
            highwater = consumer.highwater(TopicPartition(self.topic, partition))
            if highwater is not None:
                LAG.labels(str(partition)).set(max(0, highwater - st.checkpoint.offset))


@dataclass(slots=True)
class _Job:
    """A batch on its way: judged piece by piece, then planned, then committed."""

    prepared: Prepared
    deltas: Deltas
    # The state each partition in the batch was judged from: the batch is void once one is replaced.
    judged_from: dict[int, PartitionState] = field(default_factory=dict)
    plan: Plan | None = None  # set once the batch is complete
    draft: Draft | None = None  # … with what it writes whatever the read finds


async def _let_flush_on() -> None:
    """Let the flush in flight take its next step before this task goes on, if that step is ready.

    One yield runs the loop once: Redis's answer, if it has come, is read and wakes the flush, but
    behind this task (scheduled first). The second yield lets the flush run ahead of it.
    """
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class _Flushed(NamedTuple):
    """Of the batch flushed last: what :meth:`Consumer._plan` needs to know about it."""

    judged_from: dict[int, PartitionState]
    seen: list[ReadGroup]  # the ids it stores


def _chained(before: dict[int, PartitionState], job: _Job) -> bool:
    """Whether ``job`` was judged on from where a batch judged from ``before`` left off: the
    partitions in both, from the same states (a rebalance or a fence gives every partition a new one)."""
    return all(before.get(p, st) is st for p, st in job.judged_from.items())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped: its base is Any
    def __init__(self, owner: Consumer, consumer: AIOKafkaConsumer) -> None:
        self.owner = owner
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.owner._lock:  # the batch in hand is flushed before the partitions go
            self.owner._forget([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            async with self.owner._lock:
                await self.owner._assign(self.consumer, sorted(tp.partition for tp in assigned))
        except Exception as exc:  # aiokafka only logs a listener's error: the member loop raises it
            self.owner._failure = exc
            return
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))


def _count(totals: Totals, fired: list[str]) -> None:
    for kind, n in totals.by_type.items():
        EVENTS.labels(kind).inc(n)
    LATENESS.add(totals.lateness, totals.lateness_ms)
    if totals.late:
        LATE.inc(totals.late)
    for reason, n in totals.invalid.items():
        INVALID.labels(reason).inc(n)
    if totals.duplicates:
        DUPLICATES.inc(totals.duplicates)
    for rule in fired:
        ALERTS.labels(rule).inc()
