"""A batch's aggregate deltas, computed in memory in one pass: every window, HyperLogLog, funnel,
revenue, data-quality, recommendation and risk state the flush then writes in one transaction.

Pure functions over :class:`stream.batch.Prepared` — no I/O, so they are tested without Kafka or
Redis, and the per-event work is a handful of dict operations (the reason one process keeps up).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import orjson

from stream.batch import Prepared, Rejected
from stream.events import TYPES
from stream.keys import Keys
from stream.recommend import co_views
from stream.risk import CART_BUCKET_MS, risk_ops
from stream.settings import StreamSettings
from stream.state import Ops, Reply, lua_bytes
from stream.windows import LATENESS_BOUNDS_MS, LATENESS_LABELS, MINUTE_MS

__all__ = ["Plan", "Totals", "build_ops", "plan"]

STAGES = {"page_view": "view", "add_to_cart": "cart", "order_placed": "order"}


@dataclass(slots=True)
class Plan:
    """What the flush must read first: candidate ids per dedup bucket, and whose sessions where."""

    seen_groups: list[list[str | int]]
    seen_index: list[list[int]]  # per group: candidate positions, in the group's order
    session_groups: list[list[str]]  # [[sessions key, user, …], …], newest bucket first


@dataclass(slots=True)
class Totals:
    """What one batch counted, for metrics once it has committed."""

    by_type: Counter[str] = field(default_factory=Counter)
    late: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0


def plan(prepared: Prepared, keys: Keys, horizon_ms: int, gap_ms: int) -> Plan:
    groups: dict[int, list[int]] = defaultdict(list)
    users: set[str] = set()
    first = last = -1
    for i, event in enumerate(prepared.candidates):
        groups[event.ts // horizon_ms].append(i)
        if event.type == "page_view":
            users.add(event.user_id)  # type: ignore[arg-type]  # ids are strings by now (rule_violation)
            bucket = event.ts // gap_ms
            first, last = (bucket, bucket) if first < 0 else (min(first, bucket), max(last, bucket))
    events = prepared.candidates
    readers = sorted(users)
    # A session still open at the batch's first view was last written at most one bucket earlier.
    buckets = range(last, first - 2, -1) if users else range(0)
    return Plan(
        seen_groups=[[keys.seen(b), *(events[i].event_id for i in idx)] for b, idx in groups.items()],
        seen_index=list(groups.values()),
        session_groups=[[keys.sessions(b), *readers] for b in buckets],
    )


def build_ops(
    prepared: Prepared, the_plan: Plan, reply: Reply, keys: Keys, topic: str, s: StreamSettings
) -> tuple[Ops, Totals]:
    """The batch's writes, given which candidates Redis has already counted and the users' sessions."""
    ops, totals = Ops(newest=prepared.newest_ts, newest_key=keys.newest), Totals()
    candidates = prepared.candidates
    already = bytearray(len(candidates))
    for flags, idx in zip(reply.seen, the_plan.seen_index, strict=True):
        for i, flag in zip(idx, flags.encode(), strict=True):
            already[i] = flag == 49  # "1": counted by an earlier batch

    fields: dict[int, Counter[str]] = defaultdict(Counter)  # minute → hash field → n
    products: Counter[tuple[str, int, str]] = Counter()
    users: dict[int, set[str]] = defaultdict(set)
    stages: dict[tuple[str, int], set[str]] = defaultdict(set)
    seen: dict[int, list[str]] = defaultdict(list)
    views: dict[str, list[tuple[str, int]]] = defaultdict(list)
    orders: Counter[tuple[int, str]] = Counter()
    carts: dict[tuple[int, str], set[str]] = defaultdict(set)
    horizon_ms = s.stream_dedup_horizon_s * 1000
    stage_of, lateness_class, bounds, labels = STAGES.get, bisect_left, LATENESS_BOUNDS_MS, LATENESS_LABELS
    for event, lag, dup in zip(candidates, prepared.lags, already, strict=True):
        ts = event.ts
        minute = ts - ts % MINUTE_MS
        counts = fields[minute]
        if dup:
            counts["dup"] += 1
            continue
        kind = event.type
        user: str = event.user_id  # type: ignore[assignment]  # ids are strings by now (rule_violation)
        product: str = event.product_id  # type: ignore[assignment]  # present where used (rule_violation)
        counts[kind] += 1
        counts[labels[lateness_class(bounds, lag)]] += 1
        users[minute].add(user)
        seen[ts // horizon_ms].append(event.event_id)
        if product is not None:
            products[(kind, minute, product)] += 1
        stage = stage_of(kind)
        if stage is None:
            continue
        stages[(stage, minute)].add(user)
        if stage == "view":
            views[user].append((product, ts))
        elif stage == "cart":
            carts[(ts // CART_BUCKET_MS, user)].add(product)
        else:
            orders[(minute, user)] += 1
            counts["rev"] += round(event.price * 100)  # type: ignore[operator]
    for counts in fields.values():
        for name in TYPES:
            if name in counts:
                totals.by_type[name] += counts[name]

    for event in prepared.duplicates:
        fields[event.ts - event.ts % MINUTE_MS]["dup"] += 1
    totals.duplicates = sum(already) + len(prepared.duplicates)
    for rej in prepared.rejected:
        counts = fields[rej.ts - rej.ts % MINUTE_MS]
        if rej.reason == "late":
            counts["late"] += 1
            totals.late += 1
        else:
            counts["invalid"] += 1
            counts[f"inv:{rej.reason}"] += 1
            totals.invalid[rej.reason] += 1
        key = lua_bytes(rej.key or b"")
        ops.ob.append([s.stream_dlq_topic, key, _dead_letter(rej, topic), rej.reason])

    retention, product_retention = s.stream_retention_s, s.stream_product_retention_s
    for minute, counts in fields.items():
        ops.h.append([keys.minute(minute), retention, *_flat(counts)])
    by_key: dict[str, list[str | int]] = defaultdict(list)
    for (event_type, minute, product), n in products.items():
        by_key[keys.products(event_type, minute)] += (product, n)
    ops.z.extend([key, product_retention, *members] for key, members in by_key.items())
    ops.pf.extend([keys.users(minute), retention, *members] for minute, members in users.items())
    ops.pf.extend([keys.stage(st, minute), retention, *members] for (st, minute), members in stages.items())
    seen_ttl = 2 * s.stream_dedup_horizon_s + int(s.stream_allowed_lateness_s)
    ops.sa.extend([keys.seen(bucket), seen_ttl, *ids] for bucket, ids in seen.items())

    if views:
        gap_ms = s.stream_rec_session_gap_s * 1000
        pairs, new_sessions = co_views(views, reply.sessions, gap_ms=gap_ms, items=s.stream_rec_session_items)
        rec_ttl = (s.stream_rec_horizon_h + 1) * 3600
        for (hour, product), others in pairs.items():
            if others:
                ops.h.append([keys.co_views(hour, product), rec_ttl, *_flat(others)])
        by_bucket: dict[int, list[str]] = defaultdict(list)
        for user, session in new_sessions.items():
            by_bucket[views[user][-1][1] // gap_ms] += (user, session)
        ops.hs.extend(
            [keys.sessions(b), 3 * s.stream_rec_session_gap_s, *flat] for b, flat in by_bucket.items()
        )

    risk_ops(
        ops,
        keys,
        orders,
        carts,
        orders_per_minute=s.stream_risk_orders_per_minute,
        cart_products_per_10s=s.stream_risk_cart_products_per_10s,
        ttl_s=s.stream_risk_state_ttl_s,
    )
    for partition, progress in prepared.progress.items():
        ops.set += (keys.offset(topic, partition), progress.encode())
    return ops, totals


def _flat(counts: dict[str, int]) -> list[str | int]:
    out: list[str | int] = []
    for name, n in counts.items():
        out += (name, n)
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
