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

    ``orders``: (minute, user) → orders placed; ``carts``: (10 s bucket, user) → distinct products
    added. An alert is ``{alert_id, rule, user_id, window_start, window_end, threshold, count}``,
    written by the apply script only when it fires (window bounds go as text: Lua numbers are
    doubles and would print in exponent form).
    """
    ops.ro = {
        "r": "order_velocity",
        "t": orders_per_minute,
        "c": [
            [keys.risk_orders(minute), ttl_s, user, n, str(minute), str(minute + MINUTE_MS)]
            for (minute, user), n in orders.items()
        ],
    }
    ops.rc = {
        "r": "cart_spree",
        "t": cart_products_per_10s,
        "c": [
            [
                keys.risk_cart_pairs(bucket),
                keys.risk_cart_counts(bucket),
                ttl_s,
                user,
                str(bucket * CART_BUCKET_MS),
                str((bucket + 1) * CART_BUCKET_MS),
                *sorted(products),
            ]
            for (bucket, user), products in carts.items()
        ],
    }


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
