"""Risk rules: velocity checks on event time, each alert raised exactly once per user and window.

* ``order_velocity``: more than N orders placed by one user in one minute;
* ``cart_spree``: more than M distinct products added to cart by one user in 10 s.

The counters live in the state store and are bumped inside the flush transaction by the apply script
(``lua/apply.lua``), which raises the alert at the moment a counter *crosses* its threshold — so an
alert fires once whatever the batching, and a replay after a crash (which re-applies nothing that
committed) fires it once too. An alert goes to the API list and, through the outbox, to the
``risk.alerts`` topic. Pure: this module builds the counters' part of the write set.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.keys import Keys
from stream.windows import MINUTE_MS

__all__ = ["CART_BUCKET_MS", "RULES", "CartAdds", "CartSpree", "OrderCount", "OrderVelocity", "rule_counters"]

CART_BUCKET_MS = 10_000
RULES = ("order_velocity", "cart_spree")

# Window bounds go to the apply script as text: Lua numbers are doubles and would print in exponent
# form in the alert JSON.


@dataclass(slots=True)
class OrderCount:
    """Orders one user placed in one minute: ``HINCRBY key user n``."""

    key: str
    ttl: int
    user: str
    n: int
    window_start: str
    window_end: str


@dataclass(slots=True)
class OrderVelocity:
    rule: str
    threshold: int
    counts: list[OrderCount]


@dataclass(slots=True)
class CartAdds:
    """Products one user added to cart in one 10 s bucket: ``HSETNX pairs_key user|product`` each,
    then the newly distinct ones counted with ``HINCRBY counts_key user``."""

    pairs_key: str
    counts_key: str
    ttl: int
    user: str
    window_start: str
    window_end: str
    products: list[str]


@dataclass(slots=True)
class CartSpree:
    rule: str
    threshold: int
    adds: list[CartAdds]


def rule_counters(
    keys: Keys,
    orders: dict[tuple[int, str], int],
    carts: dict[tuple[int, str], list[str]],
    *,
    orders_per_minute: int,
    cart_products_per_10s: int,
    ttl_s: int,
) -> tuple[OrderVelocity, CartSpree]:
    """This batch's rule counters.

    ``orders``: (minute, user) → orders placed; ``carts``: (10 s bucket, user) → products added. An
    alert is ``{alert_id, rule, user_id, window_start, window_end, threshold, count}``, written by the
    apply script only when it fires.
    """
    velocity = OrderVelocity(
        "order_velocity",
        orders_per_minute,
        [
            OrderCount(keys.risk_orders(minute), ttl_s, user, n, str(minute), str(minute + MINUTE_MS))
            for (minute, user), n in orders.items()
        ],
    )
    spree = CartSpree(
        "cart_spree",
        cart_products_per_10s,
        [
            CartAdds(
                keys.risk_cart_pairs(bucket),
                keys.risk_cart_counts(bucket),
                ttl_s,
                user,
                str(bucket * CART_BUCKET_MS),
                str((bucket + 1) * CART_BUCKET_MS),
                sorted(products),
            )
            for (bucket, user), products in carts.items()
        ],
    )
    return velocity, spree
