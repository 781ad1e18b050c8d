"""A batch's aggregate deltas, computed in memory in one pass: every window, HyperLogLog, funnel,
revenue, data-quality, recommendation and risk state the flush then writes in one transaction.

Pure functions over :class:`stream.batch.Prepared` — no I/O, so they are tested without Kafka or
Redis.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial

import orjson

from stream.batch import Prepared, Rejected
from stream.events import TYPES, Event
from stream.keys import Keys
from stream.recommend import co_views
from stream.risk import CART_BUCKET_MS, risk_ops
from stream.settings import StreamSettings
from stream.state import Ops, Reply, lua_bytes
from stream.windows import LATENESS_BOUNDS_MS, LATENESS_LABELS, MINUTE_MS

__all__ = ["Deltas", "Plan", "Totals", "aggregate", "build_ops", "plan"]

STAGES = {"page_view": "view", "add_to_cart": "cart", "order_placed": "order"}
_lateness_class = partial(bisect_left, LATENESS_BOUNDS_MS)
TYPES_SET = frozenset(TYPES)


@dataclass(slots=True)
class Deltas:
    """A batch's deltas over its candidates, added piece by piece as the pieces are judged (while
    the previous batch is still being flushed), so that only what depends on Redis — which ids an
    earlier batch already counted, the users' sessions — is left for the flush itself.

    Every aggregate is keyed by what it writes (distinct keys and members, not events), and the
    additive ones are ``Counter``s built over zipped columns, so the per-event work happens in C.
    A candidate found already counted is subtracted again in :func:`build_ops` (rare: only a
    duplicate of an event in an earlier batch, or a replay).
    """

    horizon_ms: int
    counts: Counter[tuple[int, str]] = field(default_factory=Counter)  # (minute, hash field) → n
    kinds: Counter[tuple[int, str, int]] = field(default_factory=Counter)  # (minute, type, lateness class)
    products: Counter[tuple[str, int, str | None]] = field(default_factory=Counter)  # (type, minute, product)
    users: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # (type, minute, user): HLLs
    events: dict[int, list[Event]] = field(default_factory=dict)  # dedup bucket → candidates, in order
    lags: dict[int, list[int]] = field(default_factory=dict)  # … and how late each was
    views: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))  # user → views, in order
    carts: Counter[tuple[int, str, str]] = field(default_factory=Counter)  # (10 s bucket, user, product)
    orders: Counter[tuple[int, str]] = field(default_factory=Counter)  # (minute, user) → orders placed
    span: tuple[int, int] | None = None  # oldest and newest event time
    added: int = 0  # candidates of the batch added so far
    lag_ms: int = 0  # sum of how late the candidates were (the lateness histogram's sum)

    def add(self, prepared: Prepared) -> None:
        """Add the candidates ``prepared`` gained since the last call."""
        events, lags = prepared.candidates[self.added :], prepared.lags[self.added :]
        self.added = len(prepared.candidates)
        if not events:
            return
        times = [e.ts for e in events]
        minutes = [t - t % MINUTE_MS for t in times]
        kinds = [e.type for e in events]
        self.kinds.update(zip(minutes, kinds, map(_lateness_class, lags), strict=True))
        self.lag_ms += sum(lags)
        self.products.update(zip(kinds, minutes, [e.product_id for e in events], strict=True))  # type: ignore[misc]
        self.users.update(zip(kinds, minutes, [e.user_id for e in events], strict=True))  # type: ignore[misc]  # str by now
        buckets = [t // self.horizon_ms for t in times]
        if min(buckets) == max(buckets):  # the usual case
            self.events.setdefault(buckets[0], []).extend(events)
            self.lags.setdefault(buckets[0], []).extend(lags)
        else:
            for bucket, idx in _positions(buckets).items():
                self.events.setdefault(bucket, []).extend([events[i] for i in idx])
                self.lags.setdefault(bucket, []).extend([lags[i] for i in idx])
        views, carts, orders, counts = self.views, self.carts, self.orders, self.counts
        for event, kind in zip(events, kinds, strict=True):
            if kind == "page_view":
                views[event.user_id].append(event)  # type: ignore[index]
            elif kind == "add_to_cart":
                carts[(event.ts // CART_BUCKET_MS, event.user_id, event.product_id)] += 1  # type: ignore[index]
            elif kind == "order_placed":
                minute = event.ts - event.ts % MINUTE_MS
                orders[(minute, event.user_id)] += 1  # type: ignore[index]
                counts[(minute, "rev")] += round(event.price * 100)  # type: ignore[operator]
        first, last = min(times), max(times)  # of all candidates: at worst one session bucket more is read
        span = self.span
        self.span = (first, last) if span is None else (min(span[0], first), max(span[1], last))

    def remove(self, already: list[tuple[Event, int]]) -> None:
        """Take back candidates (with their lag) that an earlier batch counted: they are duplicates."""
        gone = set()
        counts = self.counts
        for event, lag in already:
            kind, minute, user = event.type, event.ts - event.ts % MINUTE_MS, event.user_id
            self.kinds[(minute, kind, _lateness_class(lag))] -= 1
            self.lag_ms -= lag
            counts[(minute, "dup")] += 1
            self.products[(kind, minute, event.product_id)] -= 1  # type: ignore[index]
            self.users[(kind, minute, user)] -= 1  # type: ignore[index]
            if kind == "page_view":
                gone.add(event.event_id)
            elif kind == "add_to_cart":
                self.carts[(event.ts // CART_BUCKET_MS, user, event.product_id)] -= 1  # type: ignore[index]
            elif kind == "order_placed":
                self.orders[(minute, user)] -= 1  # type: ignore[index]
                counts[(minute, "rev")] -= round(event.price * 100)  # type: ignore[operator]
        for user in {e.user_id for e, _ in already if e.event_id in gone}:
            kept = [e for e in self.views[user] if e.event_id not in gone]  # type: ignore[index]
            if kept:
                self.views[user] = kept  # type: ignore[index]
            else:
                del self.views[user]  # type: ignore[arg-type]
        for counter in (self.products, self.users, self.carts, self.orders):
            for key in [k for k, n in counter.items() if n <= 0]:
                del counter[key]


@dataclass(slots=True)
class Plan:
    """What the flush must read first: candidate ids per dedup bucket, and whose sessions where."""

    seen_groups: list[list[str | int]]
    seen_buckets: list[int]  # per group: its dedup bucket (see Deltas.events)
    session_groups: list[list[str]]  # [[sessions key, user, …], …], newest bucket first


@dataclass(slots=True)
class Totals:
    """What one batch counted, for metrics once it has committed."""

    by_type: Counter[str] = field(default_factory=Counter)
    lateness: Counter[int] = field(default_factory=Counter)  # lateness class → events counted
    lateness_ms: int = 0  # … and how late they were in all
    late: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0


def aggregate(prepared: Prepared, horizon_ms: int) -> Deltas:
    """The deltas of a whole judged batch at once (the consumer adds them piece by piece)."""
    deltas = Deltas(horizon_ms)
    deltas.add(prepared)
    return deltas


def plan(deltas: Deltas, keys: Keys, gap_ms: int) -> Plan:
    buckets = range(0)
    if deltas.views and deltas.span is not None:
        # A session still open at the batch's first view was last written at most one bucket earlier.
        first, last = deltas.span[0] // gap_ms, deltas.span[1] // gap_ms
        buckets = range(last, first - 2, -1)
    readers: list[str] = sorted(deltas.views)
    return Plan(
        seen_groups=[[keys.seen(b), *[e.event_id for e in events]] for b, events in deltas.events.items()],
        seen_buckets=list(deltas.events),
        session_groups=[[keys.sessions(b), *readers] for b in buckets],
    )


def build_ops(
    prepared: Prepared,
    deltas: Deltas,
    the_plan: Plan,
    reply: Reply,
    keys: Keys,
    topic: str,
    s: StreamSettings,
) -> tuple[Ops, Totals]:
    """The batch's writes, given which candidates Redis has already counted and the users' sessions."""
    ops, totals = Ops(newest=prepared.newest_ts, newest_key=keys.newest), Totals()
    already: list[tuple[Event, int]] = []
    for flags, bucket in zip(reply.seen, the_plan.seen_buckets, strict=True):
        if "1" in flags:  # "1": counted by an earlier batch
            events, lags = deltas.events[bucket], deltas.lags[bucket]
            already += [(events[i], lags[i]) for i, flag in enumerate(flags) if flag == "1"]
    if already:
        deltas.remove(already)
    counts = deltas.counts
    for (minute, kind, late), n in deltas.kinds.items():
        counts[(minute, kind)] += n
        counts[(minute, LATENESS_LABELS[late])] += n
        totals.lateness[late] += n
    totals.lateness_ms = deltas.lag_ms
    for event in prepared.duplicates:
        counts[(event.ts - event.ts % MINUTE_MS, "dup")] += 1
    totals.duplicates = len(already) + len(prepared.duplicates)
    for rej in prepared.rejected:
        minute = rej.ts - rej.ts % MINUTE_MS
        if rej.reason == "late":
            counts[(minute, "late")] += 1
            totals.late += 1
        else:
            counts[(minute, "invalid")] += 1
            counts[(minute, f"inv:{rej.reason}")] += 1
            totals.invalid[rej.reason] += 1
        key = lua_bytes(rej.key or b"")
        ops.ob.append([s.stream_dlq_topic, key, _dead_letter(rej, topic), rej.reason])

    retention, product_retention = s.stream_retention_s, s.stream_product_retention_s
    by_minute: dict[int, list[str | int]] = defaultdict(list)
    for (minute, name), n in counts.items():
        if n:
            by_minute[minute] += (name, n)
            if name in TYPES_SET:
                totals.by_type[name] += n
    ops.h.extend([keys.minute(minute), retention, *flat] for minute, flat in by_minute.items())
    by_window: dict[tuple[str, int], list[str | int]] = defaultdict(list)
    for (event_type, minute, product), n in deltas.products.items():
        if product is not None:
            by_window[(event_type, minute)] += (product, n)
    ops.z.extend([keys.products(*w), product_retention, *members] for w, members in by_window.items())
    active: dict[int, set[str]] = defaultdict(set)
    stages: dict[tuple[str, int], list[str]] = defaultdict(list)
    for kind, minute, user in deltas.users:
        active[minute].add(user)
        if (stage := STAGES.get(kind)) is not None:
            stages[(stage, minute)].append(user)
    ops.pf.extend([keys.users(minute), retention, *members] for minute, members in active.items())
    ops.pf.extend([keys.stage(st, minute), retention, *members] for (st, minute), members in stages.items())
    seen_ttl = 2 * s.stream_dedup_horizon_s + int(s.stream_allowed_lateness_s)
    ops.sa, ops.sa_ttl = the_plan.seen_groups, seen_ttl  # all candidates: re-adding a counted id is a no-op

    views = deltas.views
    if views:
        gap_ms = s.stream_rec_session_gap_s * 1000
        pairs, new_sessions = co_views(views, reply.sessions, gap_ms=gap_ms, items=s.stream_rec_session_items)
        by_product: dict[tuple[int, str], list[str | int]] = defaultdict(list)
        for (hour, product, other), n in pairs.items():  # counted under both products
            by_product[(hour, product)] += (other, n)
            by_product[(hour, other)] += (product, n)
        ttl = (s.stream_rec_horizon_h + 1) * 3600
        ops.h.extend([keys.co_views(*key), ttl, *flat] for key, flat in by_product.items())
        by_bucket: dict[int, list[str]] = defaultdict(list)
        for user, session in new_sessions.items():
            by_bucket[views[user][-1].ts // gap_ms] += (user, session)
        ops.hs.extend(
            [keys.sessions(b), 3 * s.stream_rec_session_gap_s, *flat] for b, flat in by_bucket.items()
        )

    carts: dict[tuple[int, str], list[str]] = defaultdict(list)
    for bucket, user, product in deltas.carts:
        carts[(bucket, user)].append(product)
    risk_ops(
        ops,
        keys,
        deltas.orders,
        carts,
        orders_per_minute=s.stream_risk_orders_per_minute,
        cart_products_per_10s=s.stream_risk_cart_products_per_10s,
        ttl_s=s.stream_risk_state_ttl_s,
    )
    for partition, progress in prepared.progress.items():
        ops.set += (keys.offset(topic, partition), progress.encode())
    return ops, totals


def _positions(values: list[int]) -> dict[int, list[int]]:
    """value → positions holding it."""
    out: dict[int, list[int]] = defaultdict(list)
    for i, value in enumerate(values):
        out[value].append(i)
    return out


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
