"""Risk rules: velocity checks on event time, each alert raised exactly once per user and window.

* ``order_velocity``: more than N orders placed by one user in one minute;
* ``cart_spree``: more than M distinct products added to cart by one user in 10 s.

The counters live in Redis and are bumped inside the flush transaction by the apply script, which
raises the alert at the moment a counter *crosses* its threshold — so an alert fires once whatever
the batching, and a replay after a crash (which re-applies nothing that committed) fires it once too.
An alert goes to the API list and, through the outbox, to the ``risk.alerts`` topic.
"""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from stream.keys import Keys
from stream.state import Ops
from stream.windows import MINUTE_MS

__all__ = ["CART_BUCKET_MS", "RULES", "list_alerts", "risk_ops"]

CART_BUCKET_MS = 10_000
RULES = ("order_velocity", "cart_spree")


def _head(rule: str, user: str, start: int, width: int, threshold: int) -> str:
    """The alert JSON up to its count, which only the apply script knows: it appends ``<n>}``."""
    alert = {
        "alert_id": f"{rule}:{user}:{start}",
        "rule": rule,
        "user_id": user,
        "window_start": start,
        "window_end": start + width,
        "threshold": threshold,
    }
    return orjson.dumps(alert)[:-1].decode() + ',"count":'


def risk_ops(
    ops: Ops,
    keys: Keys,
    orders: dict[tuple[int, str], int],
    carts: dict[tuple[int, str], list[str]],
    *,
    orders_per_minute: int,
    cart_products_per_10s: int,
    ttl_s: int,
) -> None:
    """Add this batch's rule counters to ``ops``.

    ``orders``: (minute, user) → orders placed; ``carts``: (10 s bucket, user) → distinct products added.
    """
    for (minute, user), n in orders.items():
        head = _head("order_velocity", user, minute, MINUTE_MS, orders_per_minute)
        ops.ro.append([keys.risk_orders(minute), ttl_s, user, n, orders_per_minute, head, "order_velocity"])
    for (bucket, user), products in carts.items():
        start = bucket * CART_BUCKET_MS
        head = _head("cart_spree", user, start, CART_BUCKET_MS, cart_products_per_10s)
        ops.rc.append(
            [
                keys.risk_cart_pairs(bucket),
                keys.risk_cart_counts(bucket),
                ttl_s,
                user,
                cart_products_per_10s,
                head,
                "cart_spree",
                *sorted(products),
            ]
        )


async def list_alerts(
    redis: Redis, keys: Keys, *, limit: int, rule: str | None = None, user_id: str | None = None
) -> list[dict[str, object]]:
    """The newest alerts first, optionally only one rule's or one user's."""
    raw = await redis.lrange(keys.alerts, 0, -1 if rule or user_id else limit - 1)
    alerts = []
    for item in raw:
        alert = orjson.loads(item)
        if (rule is None or alert["rule"] == rule) and (user_id is None or alert["user_id"] == user_id):
            alerts.append(alert)
            if len(alerts) == limit:
                break
    return alerts
