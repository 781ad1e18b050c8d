"""How a raw Kafka value or an API batch is judged against the one event schema (``contracts.events``,
shared with orders, the other producer of the topic).

msgspec decodes straight into a typed struct in C (the schema check *is* the parse), which is what
lets one process aggregate six figures of events per second. Rules msgspec cannot express (a product
for product events, a price for orders, no timestamps from the future) are checked right after.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from contracts import events as wire
from contracts.events import PRODUCT_TYPES, TYPES, Event, EventType

__all__ = [
    "MAX_BATCH",
    "PRODUCT_TYPES",
    "TYPES",
    "Event",
    "EventType",
    "Invalid",
    "decode_event",
    "decode_ingest_batch",
    "encode_event",
    "follows_rules",
    "rule_violation",
]

MAX_BATCH = 1000


class IngestBatch(msgspec.Struct):
    events: Annotated[list[Event], msgspec.Meta(max_length=MAX_BATCH)]


class Invalid(Exception):
    """Why an event is not counted: ``reason`` is a metric label, ``field`` the offending field."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message


_decode = wire.decode
_decode_batch = msgspec.json.Decoder(IngestBatch).decode
_encode = wire.encode
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"missing required field `(\w+)`")


def rule_violation(event: Event, now_ms: int, max_future_ms: int) -> Invalid | None:
    """The first rule beyond the schema that ``event`` breaks; also normalises numeric ids to strings."""
    if event.user_id.__class__ is int:
        event.user_id = str(event.user_id)
    if event.product_id.__class__ is int:
        event.product_id = str(event.product_id)
    if event.ts > now_ms + max_future_ms:
        return Invalid("future_ts", "ts", "is in the future")
    if event.product_id is None and event.type in PRODUCT_TYPES:
        return Invalid("schema", "product_id", f"is required for {event.type}")
    if event.price is None and event.type == "order_placed":
        return Invalid("schema", "price", "is required for order_placed")
    return None


def follows_rules(
    kind: str, ts: int, has_product: bool, has_price: bool, now_ms: int, max_future_ms: int
) -> bool:
    """Whether an event breaks none of :func:`rule_violation`'s rules: the decoders' usual case, told
    without building the :class:`Invalid` (the rules written once for both fast paths)."""
    return (
        ts <= now_ms + max_future_ms
        and (has_product or kind not in PRODUCT_TYPES)
        and (has_price or kind != "order_placed")
    )


def decode_event(raw: bytes, now_ms: int, max_future_ms: int) -> Event:
    """One Kafka value → an event, or :class:`Invalid` (reason ``bad_json``, ``schema``, ``future_ts``)."""
    try:
        event = _decode(raw)
    except msgspec.ValidationError as exc:
        raise _schema_error(exc, "event") from None
    except msgspec.DecodeError as exc:
        raise Invalid("bad_json", "event", str(exc)) from None
    product = event.product_id
    if (
        event.user_id.__class__ is str
        and (product is None or product.__class__ is str)
        and follows_rules(
            event.type, event.ts, product is not None, event.price is not None, now_ms, max_future_ms
        )
    ):
        return event  # the usual case: ids already strings, no rule broken
    problem = rule_violation(event, now_ms, max_future_ms)
    if problem is not None:
        raise problem
    return event


def decode_ingest_batch(body: bytes, now_ms: int, max_future_ms: int) -> list[Event]:
    """A ``{"events": [...]}`` body → events, all or nothing: :class:`Invalid` names ``events[i].field``."""
    try:
        events = _decode_batch(body).events
    except msgspec.ValidationError as exc:
        raise _schema_error(exc, "body") from None
    except msgspec.DecodeError as exc:
        raise Invalid("bad_json", "body", str(exc)) from None
    for i, event in enumerate(events):
        problem = rule_violation(event, now_ms, max_future_ms)
        if problem is not None:
            raise Invalid(problem.reason, f"events[{i}].{problem.field}", problem.message)
    return events


def encode_event(event: Event) -> bytes:
    return _encode(event)


def _schema_error(exc: msgspec.ValidationError, whole: str) -> Invalid:
    """msgspec's "Expected `int`, got `str` - at `$.events[3].ts`" → field ``events[3].ts``."""
    match = _AT.match(str(exc))
    assert match is not None
    message, path = match.group("msg"), match.group("path") or ""
    if missing := _MISSING.search(message):
        path, message = f"{path}.{missing.group(1)}", "is required"
    return Invalid("schema", path.lstrip(".") or whole, message)
