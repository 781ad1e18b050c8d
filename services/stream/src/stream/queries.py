"""The read side: what the API answers, straight from the aggregates in the state store (Redis).

Windows are whole minutes of event time: a range ``[from, to)`` covers every minute it overlaps.
Recommendations sum hourly co-view counts decayed by age (see :mod:`stream.recommend`); risk alerts
are the list the apply script keeps (see :mod:`stream.risk`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import orjson
from redis.asyncio import Redis

from stream.events import TYPES
from stream.keys import Keys
from stream.windows import HOUR_MS, LATENESS_LABELS, hop_window, minutes_between

__all__ = [
    "BY",
    "funnel",
    "list_alerts",
    "live_snapshot",
    "newest_event_ts",
    "summary",
    "top_co_viewed",
    "top_products",
]

# top-products ?by= → the event type counted
BY = {"views": "page_view", "clicks": "click", "carts": "add_to_cart", "purchases": "order_placed"}


async def summary(redis: Redis, keys: Keys, from_ms: int, to_ms: int) -> dict[str, object]:
    minutes = minutes_between(from_ms, to_ms)
    async with redis.pipeline(transaction=False) as pipe:
        for minute in minutes:
            pipe.hgetall(keys.minute(minute))
        pipe.pfcount(*(keys.users(m) for m in minutes))
        *hashes, unique_users = await pipe.execute()
    total: dict[str, int] = {}
    for fields in hashes:
        for name, n in fields.items():
            key = name.decode()
            total[key] = total.get(key, 0) + int(n)
    return {
        "from": from_ms,
        "to": to_ms,
        "counts": {t: total.get(t, 0) for t in TYPES},
        "unique_users": unique_users,
        "revenue": round(total.get("rev", 0) / 100, 2),
        "late": total.get("late", 0),
        "invalid": total.get("invalid", 0),
        "duplicates": total.get("dup", 0),
        "invalid_by_reason": {k[4:]: n for k, n in total.items() if k.startswith("inv:")},
        "lateness": {label: total.get(label, 0) for label in LATENESS_LABELS},
    }


async def top_products(redis: Redis, keys: Keys, by: str, n: int, at_ms: int) -> dict[str, object]:
    """Top ``n`` products of the 5-minute hopping window ending with the minute of ``at_ms``."""
    minutes = hop_window(at_ms)
    ranked: Any = await redis.zunion([keys.products(BY[by], m) for m in minutes], withscores=True)
    best = sorted(ranked, key=lambda pair: (-pair[1], pair[0]))[:n]
    return {
        "by": by,
        "window": {"from": minutes.start, "to": minutes.stop},
        "products": [{"product_id": p.decode(), "count": int(score)} for p, score in best],
    }


async def funnel(redis: Redis, keys: Keys, from_ms: int, to_ms: int) -> dict[str, object]:
    """Unique users reaching each stage (view → cart → order) in the window, and the conversions."""
    minutes = minutes_between(from_ms, to_ms)
    async with redis.pipeline(transaction=False) as pipe:
        for stage in ("view", "cart", "order"):
            pipe.pfcount(*(keys.stage(stage, m) for m in minutes))
        view, cart, order = await pipe.execute()
    return {
        "from": from_ms,
        "to": to_ms,
        "stages": {"view": view, "cart": cart, "order": order},
        "conversion": {
            "view_to_cart": _ratio(cart, view),
            "cart_to_order": _ratio(order, cart),
            "view_to_order": _ratio(order, view),
        },
    }


async def newest_event_ts(redis: Redis, keys: Keys) -> int:
    raw = await redis.get(keys.newest)
    return int(raw) if raw else 0


async def live_snapshot(redis: Redis, keys: Keys) -> dict[str, object]:
    """The last minute of event time (up to now) and how fresh the aggregates are."""
    now_ms = time.time_ns() // 1_000_000
    newest = await newest_event_ts(redis, keys)
    return {
        "ts": now_ms,
        "newest_event_ts": newest,
        "freshness_s": round(max(0, now_ms - newest) / 1000, 3) if newest else None,
        "last_minute": await summary(redis, keys, now_ms - 60_000, now_ms),
    }


async def top_co_viewed(
    redis: Redis, keys: Keys, product: str, *, k: int, now_ms: int, half_life_s: int, horizon_h: int
) -> list[dict[str, object]]:
    """The ``k`` products most co-viewed with ``product``, by decayed score as of ``now_ms``: the last
    ``horizon_h`` hourly counts weighted by ``0.5 ** (age / half-life)``, so old scores are never
    rewritten and the hourly hashes simply expire."""
    now_hour = now_ms // HOUR_MS
    hours = range(now_hour - horizon_h + 1, now_hour + 1)
    async with redis.pipeline(transaction=False) as pipe:
        for hour in hours:
            pipe.hgetall(keys.co_views(hour, product))
        per_hour = await pipe.execute()
    scores: dict[str, float] = defaultdict(float)
    for hour, counts in zip(hours, per_hour, strict=True):
        weight = 0.5 ** ((now_hour - hour) * 3600 / half_life_s)
        for other, n in counts.items():
            scores[other.decode()] += int(n) * weight
    best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [{"product_id": other, "score": round(score, 4)} for other, score in best]


async def list_alerts(
    redis: Redis, keys: Keys, *, limit: int, rule: str | None = None, user_id: str | None = None
) -> list[dict[str, object]]:
    """The newest risk alerts first, optionally only one rule's or one user's."""
    raw = await redis.lrange(keys.alerts, 0, -1 if rule or user_id else limit - 1)
    alerts = []
    for item in raw:
        alert = orjson.loads(item)
        if (rule is None or alert["rule"] == rule) and (user_id is None or alert["user_id"] == user_id):
            alerts.append(alert)
            if len(alerts) == limit:
                break
    return alerts


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
