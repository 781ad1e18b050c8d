"""Judge one fetched batch record by record, in partition order: the part of processing that must
be deterministic per partition so a replay after a crash decides exactly as the first run did.

Per partition, in offset order: malformed → rejected; event time behind the partition's watermark
(newest event time seen - allowed lateness) → rejected as late; an ``event_id`` already seen in this
batch → duplicate. What survives is a *candidate* (a :class:`JudgedEvent`): whether its id was seen
in an earlier batch is asked of the state store in the flush transaction (see :mod:`stream.state`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Protocol

import msgspec

from contracts.events import MAX_PRICE, Text
from stream.events import EventType, Invalid, decode_event, follows_rules

__all__ = ["Checkpoint", "JudgedEvent", "Prepared", "Record", "Rejected", "prepare"]


class Record(Protocol):
    """What a Kafka record must offer (aiokafka's ``ConsumerRecord`` does)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


NO_PRICE = -1.0  # JudgedEvent.price while decoding, for an event without one


class JudgedEvent(msgspec.Struct, gc=False):
    """An event that passed judging, with its ids as strings (the wire allows numbers too).

    What aggregation reads, typed as it is: every id a string, ``product_id`` ``""`` for the types
    that carry none (order, payment), ``price`` ``0.0`` where absent (an order always has one).

    Also what most values decode to directly: the wire's schema (``contracts.events.Event``) with
    string ids only and defaults for what may be absent. A value it refuses, or one breaking a rule
    beyond the schema, goes the long way (:func:`stream.events.decode_event`): decoded as the wire
    allows, then judged valid (and converted) or invalid with the reason.
    """

    event_id: Text
    type: EventType
    user_id: Text
    ts: Annotated[int, msgspec.Meta(ge=0)]
    product_id: Text = ""
    price: Annotated[float, msgspec.Meta(ge=0, le=MAX_PRICE)] = NO_PRICE


_decode_judged = msgspec.json.Decoder(JudgedEvent).decode


@dataclass(slots=True)
class Checkpoint:
    """Where a partition stands: the next offset to process and its newest event time (the watermark
    base). Stored in the state store with the aggregates it covers, so a restart resumes from it."""

    offset: int
    max_ts: int = 0

    def encode(self) -> str:
        return f"{self.offset}:{self.max_ts}"

    @classmethod
    def decode(cls, text: str) -> Checkpoint:
        offset, _, max_ts = text.partition(":")
        return cls(int(offset), int(max_ts or 0))


@dataclass(slots=True)
class Rejected:
    """An event that is not counted and goes to the dead-letter topic."""

    reason: str  # bad_json | schema | future_ts | late
    detail: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    ts: int  # event time if known, else the record's timestamp: which minute counts it


@dataclass(slots=True)
class Prepared:
    candidates: list[JudgedEvent] = field(default_factory=list)
    lags: list[int] = field(default_factory=list)  # per candidate: newest event time seen - its ts
    duplicates: list[JudgedEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)  # partition → after this batch
    newest_ts: int = 0
    records: int = 0  # records fetched into this batch, judged or skipped
    ids: set[str] = field(default_factory=set)  # event ids of the candidates


def prepare(
    batch: dict[int, list[Record]],
    checkpoints: dict[int, Checkpoint],
    *,
    now_ms: int,
    lateness_ms: int,
    max_future_ms: int,
    into: Prepared | None = None,
) -> Prepared:
    """Classify ``batch`` (partition → records) from ``checkpoints``; partitions not in it are skipped.

    With ``into``, the records extend that batch (``checkpoints`` must then be where it leaves off): a
    batch is fetched in several pieces while the previous one is being flushed.
    """
    out = into if into is not None else Prepared()
    seen = out.ids
    candidates, lags, duplicates, rejected = out.candidates, out.lags, out.duplicates, out.rejected
    keep, late_after, seen_add = candidates.append, lags.append, seen.add
    for partition, records in batch.items():
        start = checkpoints.get(partition)
        if start is None:  # revoked while the batch was in flight
            continue
        out.records += len(records)
        max_ts, skip = start.max_ts, 0
        while skip < len(records) and records[skip].offset < start.offset:  # fetched before a seek
            skip += 1
        if skip == len(records):
            continue
        for rec in records[skip:] if skip else records:  # in offset order
            raw = rec.value or b""
            try:
                judged = _decode(raw, now_ms, max_future_ms)
            except Invalid as exc:
                # Its own ts is missing or untrustworthy: it counts in the minute it was produced.
                detail, offset = f"{exc.field}: {exc.message}", rec.offset
                rejected.append(Rejected(exc.reason, detail, partition, offset, rec.key, raw, rec.timestamp))
                continue
            ts = judged.ts
            lag = max_ts - ts
            if lag > lateness_ms:
                detail = f"{lag} ms behind the watermark base"
                rejected.append(Rejected("late", detail, partition, rec.offset, rec.key, raw, ts))
                continue
            if lag < 0:
                max_ts, lag = ts, 0
            if judged.event_id in seen:
                duplicates.append(judged)
                continue
            seen_add(judged.event_id)
            keep(judged)
            late_after(lag)
        out.checkpoints[partition] = Checkpoint(records[-1].offset + 1, max_ts)
        if max_ts > out.newest_ts:
            out.newest_ts = max_ts
    return out


def _decode(raw: bytes, now_ms: int, max_future_ms: int) -> JudgedEvent:
    """One Kafka value → the event as aggregation reads it, or :class:`~stream.events.Invalid`.

    Straight into a :class:`JudgedEvent` when the value allows (string ids, no rule beyond the
    schema broken); else the long way, :func:`~stream.events.decode_event`, which also names what
    is wrong.
    """
    try:
        judged = _decode_judged(raw)
    except msgspec.DecodeError:
        pass
    else:
        has_price = judged.price != NO_PRICE
        if follows_rules(judged.type, judged.ts, judged.product_id != "", has_price, now_ms, max_future_ms):
            if not has_price:
                judged.price = 0.0
            return judged
    event = decode_event(raw, now_ms, max_future_ms)
    # decode_event made the ids strings already (str() of a string is that same string).
    product = event.product_id
    return JudgedEvent(
        event.event_id,
        event.type,
        str(event.user_id),
        event.ts,
        "" if product is None else str(product),
        event.price or 0.0,
    )
