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
from itertools import chain

import orjson

from stream.batch import Prepared, Rejected
from stream.keys import Keys
from stream.recommend import co_views
from stream.risk import CART_BUCKET_MS, risk_ops
from stream.settings import StreamSettings
from stream.state import Ops, Reply, lua_bytes
from stream.windows import LATENESS_BOUNDS_MS, LATENESS_LABELS, MINUTE_MS

__all__ = ["Plan", "Totals", "build_ops", "plan"]

STAGES = {"page_view": "view", "add_to_cart": "cart", "order_placed": "order"}
_lateness_class = partial(bisect_left, LATENESS_BOUNDS_MS)


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
    events = prepared.candidates
    groups = _positions([e.ts // horizon_ms for e in events])
    views = [e for e in events if e.type == "page_view"]
    readers: list[str] = sorted({e.user_id for e in views})  # type: ignore[misc]  # str by now (rule_violation)
    buckets = range(0)
    if views:
        # A session still open at the batch's first view was last written at most one bucket earlier.
        first, last = min(e.ts for e in views) // gap_ms, max(e.ts for e in views) // gap_ms
        buckets = range(last, first - 2, -1)
    return Plan(
        seen_groups=[[keys.seen(b), *(events[i].event_id for i in idx)] for b, idx in groups.items()],
        seen_index=list(groups.values()),
        session_groups=[[keys.sessions(b), *readers] for b in buckets],
    )


def build_ops(
    prepared: Prepared, the_plan: Plan, reply: Reply, keys: Keys, topic: str, s: StreamSettings
) -> tuple[Ops, Totals]:
    """The batch's writes, given which candidates Redis has already counted and the users' sessions.

    Column at a time: each aggregate is a ``Counter``/``set`` over zipped columns, so the per-event
    work happens in C; only views, carts and orders (the per-user state) are walked in Python.
    """
    ops, totals = Ops(newest=prepared.newest_ts, newest_key=keys.newest), Totals()
    fresh, lags = prepared.candidates, prepared.lags
    already = bytearray(len(fresh))
    for flags, idx in zip(reply.seen, the_plan.seen_index, strict=True):
        for i, flag in zip(idx, flags.encode(), strict=True):
            already[i] = flag == 49  # "1": counted by an earlier batch
    fields: dict[int, Counter[str]] = defaultdict(Counter)  # minute → hash field → n
    if any(already):
        for event, dup in zip(fresh, already, strict=True):
            if dup:
                fields[event.ts - event.ts % MINUTE_MS]["dup"] += 1
        fresh = [e for e, dup in zip(fresh, already, strict=True) if not dup]
        lags = [lag for lag, dup in zip(lags, already, strict=True) if not dup]

    times = [e.ts for e in fresh]
    kinds: list[str] = [e.type for e in fresh]
    users: list[str] = [e.user_id for e in fresh]  # type: ignore[misc]  # str by now (rule_violation)
    minutes = [t - t % MINUTE_MS for t in times]
    for (minute, kind), n in Counter(zip(minutes, kinds, strict=True)).items():
        fields[minute][kind] += n
    for (minute, late), n in Counter(zip(minutes, map(_lateness_class, lags), strict=True)).items():
        fields[minute][LATENESS_LABELS[late]] += n
    totals.by_type.update(kinds)
    products = Counter(zip(kinds, minutes, (e.product_id for e in fresh), strict=True))
    active: dict[int, list[str]] = defaultdict(list)
    for minute, user in set(zip(minutes, users, strict=True)):
        active[minute].append(user)
    stages: dict[tuple[str, int], list[str]] = defaultdict(list)
    for kind, minute, user in set(zip(kinds, minutes, users, strict=True)):
        if (stage := STAGES.get(kind)) is not None:
            stages[(stage, minute)].append(user)
    horizon_ms = s.stream_dedup_horizon_s * 1000
    ids = [e.event_id for e in fresh]
    seen = {b: [ids[i] for i in idx] for b, idx in _positions([t // horizon_ms for t in times]).items()}

    views: dict[str, list[tuple[str, int]]] = defaultdict(list)
    carts: dict[tuple[int, str], set[str]] = defaultdict(set)
    orders: Counter[tuple[int, str]] = Counter()
    for event in fresh:
        kind = event.type
        if kind == "page_view":
            views[event.user_id].append((event.product_id, event.ts))  # type: ignore[index, arg-type]
        elif kind == "add_to_cart":
            carts[(event.ts // CART_BUCKET_MS, event.user_id)].add(event.product_id)  # type: ignore[index, arg-type]
        elif kind == "order_placed":
            minute = event.ts - event.ts % MINUTE_MS
            orders[(minute, event.user_id)] += 1  # type: ignore[index]
            fields[minute]["rev"] += round(event.price * 100)  # type: ignore[operator]

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
    by_window: dict[tuple[str, int], list[str | int]] = defaultdict(list)
    for (event_type, minute, product), n in products.items():
        if product is not None:
            by_window[(event_type, minute)] += (product, n)
    ops.z.extend([keys.products(*w), product_retention, *members] for w, members in by_window.items())
    ops.pf.extend([keys.users(minute), retention, *members] for minute, members in active.items())
    ops.pf.extend([keys.stage(st, minute), retention, *members] for (st, minute), members in stages.items())
    seen_ttl = 2 * s.stream_dedup_horizon_s + int(s.stream_allowed_lateness_s)
    ops.sa.extend([keys.seen(bucket), seen_ttl, *ids] for bucket, ids in seen.items())

    if views:
        gap_ms = s.stream_rec_session_gap_s * 1000
        pairs, new_sessions = co_views(views, reply.sessions, gap_ms=gap_ms, items=s.stream_rec_session_items)
        ops.cv, ops.cvn = list(chain.from_iterable(pairs)), list(pairs.values())
        ops.cv_prefix, ops.cv_ttl = keys.co_views_prefix, (s.stream_rec_horizon_h + 1) * 3600
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


def _positions(values: list[int]) -> dict[int, list[int]]:
    """value → positions holding it; a batch usually falls into one bucket, which is one list."""
    if not values:
        return {}
    if min(values) == max(values):
        return {values[0]: list(range(len(values)))}
    out: dict[int, list[int]] = defaultdict(list)
    for i, value in enumerate(values):
        out[value].append(i)
    return out


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
