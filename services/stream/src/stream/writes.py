"""The flush's pure half: what a batch must read from the state store (:func:`plan`), and from what
the read found, the batch's write set (:func:`build_writes`) — every delta, dead letter and
checkpoint that :mod:`stream.state` then applies in one transaction. Most of the write set does not
depend on the read (:func:`draft_writes`): it is built before, while the previous batch is still in
Redis, so that only the co-views and sessions are left between the read and the apply.

The write set's fields are the apply script's named inputs (``lua/apply.lua``): each entry is one
key's worth, with its members flat (``[field, n, field, n, …]``) so the script hands them to Redis
in chunks. No I/O and no Redis here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import orjson

from stream.aggregate import Deltas
from stream.batch import JudgedEvent, Prepared, Rejected
from stream.events import TYPES
from stream.keys import Keys
from stream.recommend import co_views
from stream.risk import CartSpree, OrderVelocity, rule_counters
from stream.settings import StreamSettings
from stream.windows import LATENESS_LABELS, MINUTE_MS

__all__ = [
    "Checkpointed",
    "DeadLetter",
    "Draft",
    "Found",
    "Increments",
    "Members",
    "Newest",
    "NotStored",
    "Plan",
    "ReadGroup",
    "Totals",
    "WriteSet",
    "build_writes",
    "draft_writes",
    "plan",
]

STAGES = {"page_view": "view", "add_to_cart": "cart", "order_placed": "order"}
TYPES_SET = frozenset(TYPES)


@dataclass(slots=True)
class ReadGroup:
    """Members to look up in one key: ids in a seen set (``SMISMEMBER``), users in a sessions hash
    (``HMGET``)."""

    key: str
    members: list[str]


@dataclass(slots=True)
class Plan:
    """What the flush reads first: candidate ids per dedup bucket, and whose sessions where."""

    seen: list[ReadGroup]  # one per dedup bucket of the batch's candidates
    seen_buckets: list[int]  # per group: its dedup bucket (see Deltas.events)
    sessions: list[ReadGroup]  # users with views, per session bucket, newest bucket first


@dataclass(slots=True)
class Found:
    """What the read found: per seen group, which ids an earlier batch counted (``"0110…"``); the
    stored session of each user with views (``None``: no open session)."""

    seen: list[str]
    sessions: dict[str, str | None]


@dataclass(slots=True)
class Increments:
    """Add ``n`` to each member of one hash (``HMGET`` + ``HSET``) or sorted set (``ZMSCORE`` +
    ``ZADD``); ``deltas`` is ``[member, n, member, n, …]``. Then ``EXPIRE key ttl``."""

    key: str
    ttl: int
    deltas: list[str | int]


@dataclass(slots=True)
class Members:
    """``PFADD`` / ``SADD`` / ``HSET`` (``[field, value, …]``) these members, then ``EXPIRE key ttl``."""

    key: str
    ttl: int
    members: list[str]


@dataclass(slots=True)
class Checkpointed:
    """``SET key value``: a partition's new checkpoint."""

    key: str
    value: str


@dataclass(slots=True)
class Newest:
    """The newest event time aggregated: ``key`` is raised to ``ts`` if below it."""

    key: str
    ts: int


@dataclass(slots=True)
class DeadLetter:
    """A message for the outbox (``XADD``), produced to ``topic`` by the relay."""

    topic: str
    key: bytes
    value: str
    reason: str


@dataclass(slots=True)
class WriteSet:
    """One batch's writes, applied together with its checkpoints or not at all."""

    newest: Newest
    order_velocity: OrderVelocity
    cart_spree: CartSpree
    hashes: list[Increments] = field(default_factory=list)  # minute counts, then co-views
    sorted_sets: list[Increments] = field(default_factory=list)  # products per type and minute
    hyperloglogs: list[Members] = field(default_factory=list)  # active users, funnel stages
    seen: list[Members] = field(default_factory=list)  # ids counted, per dedup bucket
    sessions: list[Members] = field(default_factory=list)  # HSET user → session, per session bucket
    checkpoints: list[Checkpointed] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


@dataclass(slots=True)
class Totals:
    """What one batch counted, for metrics once it has committed."""

    by_type: Counter[str] = field(default_factory=Counter)
    lateness: Counter[int] = field(default_factory=Counter)  # lateness class → events counted
    lateness_ms: int = 0  # … and how late they were in all
    late: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0


@dataclass(slots=True)
class Draft:
    """What :func:`draft_writes` built before the read."""

    writes: WriteSet
    totals: Totals
    # (seen group, index) of the candidates it took out of the deltas as counted by the batch before
    counted: set[tuple[int, int]]


def plan(deltas: Deltas, keys: Keys, gap_ms: int) -> Plan:
    """What to read for a complete batch: its candidates' ids, and the sessions of users with views."""
    buckets = range(0)
    if deltas.views and deltas.span is not None:
        # A session still open at the batch's first view was last written at most one bucket earlier.
        first, last = deltas.span[0] // gap_ms, deltas.span[1] // gap_ms
        buckets = range(last, first - 2, -1)
    readers: list[str] = sorted(deltas.views)
    return Plan(
        seen=[ReadGroup(keys.seen(b), [e.event_id for e in events]) for b, events in deltas.events.items()],
        seen_buckets=list(deltas.events),
        sessions=[ReadGroup(keys.sessions(b), readers) for b in buckets],
    )


def draft_writes(
    prepared: Prepared,
    deltas: Deltas,
    the_plan: Plan,
    keys: Keys,
    topic: str,
    s: StreamSettings,
    *,
    stored_before: Mapping[str, AbstractSet[str]] | None = None,
) -> Draft:
    """The part of the write set that does not depend on the read: every delta but the co-views
    and sessions (:func:`build_writes` adds those), and the totals but the duplicates.

    Built before the read, while the batch before this one is still being flushed: its seen ids
    (``stored_before``, seen key → ids) are taken out of ``deltas`` at once, as the read will find
    them counted once it has committed. Any other candidate the read finds counted (rare: a
    duplicate of an older batch, a replay) makes :func:`build_writes` build it again.
    """
    counted: set[tuple[int, int]] = set()
    if stored_before:
        for g, group in enumerate(the_plan.seen):
            if ids := stored_before.get(group.key):
                counted.update((g, i) for i, member in enumerate(group.members) if member in ids)
        if counted:
            deltas.remove(_candidates_at(deltas, the_plan, counted))
    return Draft(*_write_set(prepared, deltas, the_plan, keys, topic, s), counted)


class NotStored(Exception):
    """A batch was drafted on ids the batch before it stores, and the read does not find them: that
    batch did not commit, so this one must not either (it is read again from the stored checkpoints)."""


def build_writes(
    prepared: Prepared,
    deltas: Deltas,
    the_plan: Plan,
    found: Found,
    keys: Keys,
    topic: str,
    s: StreamSettings,
    draft: Draft | None = None,
) -> tuple[WriteSet, Totals]:
    """The batch's write set, given which candidates an earlier batch counted and the users' sessions.

    ``draft`` is what :func:`draft_writes` built for the same batch before the read (used up:
    completed in place, or built again if the read found more candidates counted than it took out).
    ``deltas`` is used up: candidates found already counted are taken out of it.
    """
    counted = {  # "1": counted by an earlier batch
        (g, i)
        for g, flags in enumerate(found.seen)
        if "1" in flags
        for i, flag in enumerate(flags)
        if flag == "1"
    }
    taken = draft.counted if draft is not None else set()
    if not taken <= counted:
        raise NotStored(f"{len(taken - counted)} ids of the batch before are not stored")
    if more := counted - taken:
        deltas.remove(_candidates_at(deltas, the_plan, more))
    if draft is None or more:
        writes, totals = _write_set(prepared, deltas, the_plan, keys, topic, s)
    else:
        writes, totals = draft.writes, draft.totals
    totals.duplicates = len(counted) + len(prepared.duplicates)
    if deltas.views:
        co_viewed, writes.sessions = _co_views_and_sessions(deltas.views, found, keys, s)
        writes.hashes = writes.hashes + co_viewed
    return writes, totals


def _write_set(
    prepared: Prepared, deltas: Deltas, the_plan: Plan, keys: Keys, topic: str, s: StreamSettings
) -> tuple[WriteSet, Totals]:
    """The write set without co-views and sessions, from ``deltas`` as they stand (left as they are)."""
    totals = Totals()
    counts = _count(prepared, deltas, totals)
    retention = s.stream_retention_s
    seen_ttl = 2 * s.stream_dedup_horizon_s + int(s.stream_allowed_lateness_s)
    velocity, spree = _rule_counters(deltas, keys, s)
    dlq = s.stream_dlq_topic
    writes = WriteSet(
        newest=Newest(keys.newest, prepared.newest_ts),
        order_velocity=velocity,
        cart_spree=spree,
        hashes=_minute_counts(counts, keys, retention, totals),
        sorted_sets=_product_panes(deltas, keys, s.stream_product_retention_s),
        hyperloglogs=_unique_users(deltas, keys, retention),
        # All candidates: re-adding an id already counted is a no-op.
        seen=[Members(g.key, seen_ttl, g.members) for g in the_plan.seen],
        checkpoints=[
            Checkpointed(keys.checkpoint(topic, partition), checkpoint.encode())
            for partition, checkpoint in prepared.checkpoints.items()
        ],
        dead_letters=[
            DeadLetter(dlq, rej.key or b"", _dead_letter(rej, topic), rej.reason) for rej in prepared.rejected
        ],
    )
    return writes, totals


def _candidates_at(
    deltas: Deltas, the_plan: Plan, positions: AbstractSet[tuple[int, int]]
) -> list[tuple[JudgedEvent, int]]:
    """The candidates (with their lag) at ``positions``: (seen group of the plan, index in it)."""
    buckets = the_plan.seen_buckets
    return [(deltas.events[buckets[g]][i], deltas.lags[buckets[g]][i]) for g, i in sorted(positions)]


def _count(prepared: Prepared, deltas: Deltas, totals: Totals) -> Counter[tuple[int, str]]:
    """``deltas.counts`` ((minute, hash field) → n) with the counts by type and lateness class,
    duplicates, late and invalid events added (``deltas`` is left as it is); those go to ``totals`` too."""
    counts = deltas.counts.copy()
    for (minute, kind, late), n in deltas.kinds.items():
        counts[(minute, kind)] += n
        counts[(minute, LATENESS_LABELS[late])] += n
        totals.lateness[late] += n
    totals.lateness_ms = deltas.lag_ms
    for event in prepared.duplicates:
        counts[(event.ts - event.ts % MINUTE_MS, "dup")] += 1
    for rej in prepared.rejected:
        minute = rej.ts - rej.ts % MINUTE_MS
        if rej.reason == "late":
            counts[(minute, "late")] += 1
            totals.late += 1
        else:
            counts[(minute, "invalid")] += 1
            counts[(minute, f"inv:{rej.reason}")] += 1
            totals.invalid[rej.reason] += 1
    return counts


def _minute_counts(
    counts: Counter[tuple[int, str]], keys: Keys, ttl: int, totals: Totals
) -> list[Increments]:
    by_minute: dict[int, list[str | int]] = defaultdict(list)
    for (minute, name), n in counts.items():
        if n:
            by_minute[minute] += (name, n)
            if name in TYPES_SET:
                totals.by_type[name] += n
    return [Increments(keys.minute(minute), ttl, flat) for minute, flat in by_minute.items()]


def _product_panes(deltas: Deltas, keys: Keys, ttl: int) -> list[Increments]:
    """Per event type and minute: products → events (the panes of the hopping windows)."""
    by_pane: dict[tuple[str, int], list[str | int]] = defaultdict(list)
    for (event_type, minute, product), n in deltas.products.items():
        if product:  # "": a type without a product
            by_pane[(event_type, minute)] += (product, n)
    return [Increments(keys.products(*pane), ttl, members) for pane, members in by_pane.items()]


def _unique_users(deltas: Deltas, keys: Keys, ttl: int) -> list[Members]:
    """HyperLogLog members: users active per minute, and per funnel stage and minute."""
    active: dict[int, set[str]] = defaultdict(set)
    stages: dict[tuple[str, int], list[str]] = defaultdict(list)
    for kind, minute, user in deltas.users:
        active[minute].add(user)
        if (stage := STAGES.get(kind)) is not None:
            stages[(stage, minute)].append(user)
    return [Members(keys.users(minute), ttl, list(users)) for minute, users in active.items()] + [
        Members(keys.stage(stage, minute), ttl, users) for (stage, minute), users in stages.items()
    ]


def _co_views_and_sessions(
    views: dict[str, list[JudgedEvent]], found: Found, keys: Keys, s: StreamSettings
) -> tuple[list[Increments], list[Members]]:
    """Co-view counts per product and hour (each pair under both products), and the users' new
    sessions, each in the bucket of its user's last view."""
    gap_ms = s.stream_rec_session_gap_s * 1000
    pairs, new_sessions = co_views(views, found.sessions, gap_ms=gap_ms, items=s.stream_rec_session_items)
    by_product: dict[tuple[int, str], list[str | int]] = defaultdict(list)
    for (hour, product, other), n in pairs.items():
        by_product[(hour, product)] += (other, n)
        by_product[(hour, other)] += (product, n)
    ttl = (s.stream_rec_horizon_h + 1) * 3600
    co = [Increments(keys.co_views(*key), ttl, flat) for key, flat in by_product.items()]
    by_bucket: dict[int, list[str]] = defaultdict(list)
    for user, session in new_sessions.items():
        by_bucket[views[user][-1].ts // gap_ms] += (user, session)
    session_ttl = 3 * s.stream_rec_session_gap_s
    return co, [Members(keys.sessions(b), session_ttl, flat) for b, flat in by_bucket.items()]


def _rule_counters(deltas: Deltas, keys: Keys, s: StreamSettings) -> tuple[OrderVelocity, CartSpree]:
    carts: dict[tuple[int, str], list[str]] = defaultdict(list)
    for bucket, user, product in deltas.carts:
        carts[(bucket, user)].append(product)
    return rule_counters(
        keys,
        deltas.orders,
        carts,
        orders_per_minute=s.stream_risk_orders_per_minute,
        cart_products_per_10s=s.stream_risk_cart_products_per_10s,
        ttl_s=s.stream_risk_state_ttl_s,
    )


def _dead_letter(rej: Rejected, topic: str) -> str:
    """The dead-letter message: why, where it came from, and the original bytes (as text)."""
    return orjson.dumps(
        {
            "reason": rej.reason,
            "detail": rej.detail,
            "topic": topic,
            "partition": rej.partition,
            "offset": rej.offset,
            "event": rej.value.decode(errors="replace"),
        }
    ).decode()
