"""Orders as rows and as the API and events show them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiomysql

from orders.db import placeholders, transaction
from orders.states import Status

__all__ = [
    "MAX_USERNAME",
    "MAX_USER_ID",
    "Item",
    "Order",
    "fetch_orders",
    "list_orders",
    "load_order",
    "unstorable_claim",
]

# What the orders table stores (characters): orders.user_id VARCHAR(64), orders.username VARCHAR(200).
MAX_USER_ID = 64
MAX_USERNAME = 200

_COLUMNS = (
    "id, user_id, username, status, total_cents, payment_ref, email_sent_at, created_at, updated_at, "
    "payment_attempts, refund_requested_at, refund_ref, refunded_cents, refund_email_sent_at"
)


@dataclass(frozen=True, slots=True)
class Item:
    product_id: int
    quantity: int
    price_cents: int

    def to_json(self) -> dict[str, int]:
        return {"product_id": self.product_id, "quantity": self.quantity, "price_cents": self.price_cents}


@dataclass(frozen=True, slots=True)
class Order:
    id: int
    user_id: str
    username: str
    status: Status
    total_cents: int
    items: tuple[Item, ...]
    payment_ref: str | None
    email_sent: bool
    created_at: datetime
    updated_at: datetime
    # Money going back (migration 0007); a new order has none of it.
    payment_attempts: int = 0  # > 0: a charge may exist at the provider
    refund_requested: bool = False
    refund_ref: str | None = None
    refunded_cents: int | None = None  # recorded: > 0 refunded, 0 nothing had been captured
    refund_email_sent: bool = False

    @property
    def payment_may_exist(self) -> bool:
        """Money may have been taken: the order is paid, or the worker set out to charge it."""
        return self.status in (Status.PAID, Status.FULFILLED) or self.payment_attempts > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "user_id": self.user_id,
            "items": [item.to_json() for item in self.items],
            "total_cents": self.total_cents,
            "refund": self.refund_json(),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }

    def refund_json(self) -> dict[str, Any] | None:
        """``None`` (no money to give back), then ``requested``, then ``refunded`` or ``not_charged``."""
        if self.refunded_cents is not None:
            if self.refunded_cents > 0:
                return {"status": "refunded", "amount_cents": self.refunded_cents}
            return {"status": "not_charged", "amount_cents": 0}
        return {"status": "requested"} if self.refund_requested else None

    def event(self, status: Status) -> dict[str, Any]:
        """The outbox payload for this order entering ``status``.

        A full snapshot, so consumers never need to look the order up.
        """
        return {
            "order_id": self.id,
            "user_id": self.user_id,
            "username": self.username,
            "status": status.value,
            "total_cents": self.total_cents,
            "items": [item.to_json() for item in self.items],
            "ts": int(time.time() * 1000),
        }


def unstorable_claim(user_id: str, username: str) -> str | None:
    """Why a token's identity cannot be stored as it is, or ``None``.

    The placing procedure reads its arguments through ``JSON_TABLE``, which truncates a long value with
    a warning instead of failing: a 65-character id would be stored as its 64-character prefix, which
    is someone else's id. So the caller is refused instead; so is text that is not valid UTF-8.
    """
    if not 0 < len(user_id) <= MAX_USER_ID:
        return f"user id (sub) must be 1-{MAX_USER_ID} characters"
    if len(username) > MAX_USERNAME:
        return f"username must be at most {MAX_USERNAME} characters"
    try:
        user_id.encode()
        username.encode()
    except UnicodeEncodeError:
        return "user id and username must be valid UTF-8"
    return None


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds") + "Z"


def _order(row: tuple[Any, ...], items: tuple[Item, ...]) -> Order:
    return Order(
        id=row[0],
        user_id=row[1],
        username=row[2],
        status=Status(row[3]),
        total_cents=row[4],
        items=items,
        payment_ref=row[5],
        email_sent=row[6] is not None,
        created_at=row[7],
        updated_at=row[8],
        payment_attempts=row[9],
        refund_requested=row[10] is not None,
        refund_ref=row[11],
        refunded_cents=None if row[12] is None else int(row[12]),
        refund_email_sent=row[13] is not None,
    )


async def fetch_orders(
    cur: aiomysql.Cursor, where: str, params: Sequence[Any], *, tail: str = ""
) -> list[Order]:
    """Orders matching ``where`` (SQL with ``%s`` placeholders) and their items, in two queries.

    ``tail`` follows the WHERE clause (``ORDER BY … LIMIT … FOR UPDATE``); callers pass constants only.
    """
    await cur.execute(f"SELECT {_COLUMNS} FROM orders WHERE {where} {tail}", params)  # noqa: S608
    rows = await cur.fetchall()
    if not rows:
        return []
    ids = [row[0] for row in rows]
    await cur.execute(
        "SELECT order_id, product_id, quantity, price_cents FROM order_items "  # noqa: S608
        f"WHERE order_id IN ({placeholders(len(ids))}) ORDER BY order_id, product_id",
        ids,
    )
    items: dict[int, list[Item]] = {}
    for order_id, *item in await cur.fetchall():
        items.setdefault(order_id, []).append(Item(*item))
    return [_order(row, tuple(items.get(row[0], ()))) for row in rows]


async def load_order(cur: aiomysql.Cursor, order_id: int, *, for_update: bool = False) -> Order | None:
    """One order with its items; ``for_update`` locks the order row until the transaction ends."""
    found = await fetch_orders(cur, "id = %s", (order_id,), tail="FOR UPDATE" if for_update else "")
    return found[0] if found else None


async def list_orders(pool: aiomysql.Pool, user_id: str, *, limit: int, before: int | None) -> list[Order]:
    """The user's orders, newest first, ``limit`` of them with ids below ``before`` (keyset pagination)."""
    async with transaction(pool) as cur:
        return await fetch_orders(
            cur,
            "user_id = %s AND id < %s",
            (user_id, before if before is not None else 2**63),
            tail=f"ORDER BY id DESC LIMIT {int(limit)}",
        )
