"""The ``events`` topic's schema: one JSON object per event, what the stream service counts.

Producers: the stream service's ingest API (behavioural events) and orders' outbox relay
(:func:`order_line_events`: ``order_placed`` and ``payment``, one per order line). Consumer: the stream
service, which decodes each value with :func:`decode` (msgspec: the schema check *is* the parse, in C)
and then applies the rules a schema cannot state (see ``stream.events``).

``ts`` is event time in ms since the epoch. Ids may arrive as numbers; the stream keeps them as strings.
``event_id`` is the dedup key: a producer that sends the same event again must send the same id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

import msgspec

__all__ = [
    "MAX_PRICE",
    "PRODUCT_TYPES",
    "TYPES",
    "Event",
    "EventType",
    "OrderEventType",
    "OrderLine",
    "decode",
    "encode",
    "order_line_events",
]

EventType = Literal["page_view", "click", "add_to_cart", "order_placed", "payment"]
TYPES: tuple[str, ...] = ("page_view", "click", "add_to_cart", "order_placed", "payment")
# These name a product (``product_id`` required); order_placed also needs a price.
PRODUCT_TYPES = frozenset({"page_view", "click", "add_to_cart"})
OrderEventType = Literal["order_placed", "payment"]
MAX_PRICE = 1e9

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Id = Text | int


class Event(msgspec.Struct, gc=False):
    """One event of the topic (field order is the encoded order)."""

    event_id: Text
    type: EventType
    user_id: Id
    ts: Annotated[int, msgspec.Meta(ge=0)]
    product_id: Id | None = None
    price: Annotated[float, msgspec.Meta(ge=0, le=MAX_PRICE)] | None = None


class OrderLine(msgspec.Struct, frozen=True):
    """What orders knows of one order line: product, quantity, unit price in cents."""

    product_id: int
    quantity: int
    price_cents: int


# Bound methods, not wrappers: the stream decodes six figures of values per second with ``decode``.
# decode(raw) -> Event, or msgspec.DecodeError (msgspec.ValidationError for a schema problem).
decode = msgspec.json.Decoder(Event).decode
# encode(event) -> bytes: the JSON object, fields in the struct's order.
encode = msgspec.json.Encoder().encode


def order_line_events(
    source_id: str, kind: OrderEventType, user_id: str, ts: int, lines: Iterable[OrderLine]
) -> list[Event]:
    """One ``kind`` event per order line, priced at the line's total. ``source_id`` (the outbox event's
    id) makes the ids stable: relaying the same order event again yields the same events, which the
    stream drops as duplicates."""
    return [
        Event(
            event_id=f"{source_id}-{line.product_id}",
            type=kind,
            user_id=user_id,
            ts=ts,
            product_id=line.product_id,
            price=line.price_cents * line.quantity / 100,
        )
        for line in lines
    ]
