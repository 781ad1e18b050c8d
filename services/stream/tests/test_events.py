"""The event schema: what is valid, and how an invalid one is named."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest

from stream.batch import Checkpoint, JudgedEvent, prepare
from stream.events import Invalid, decode_event, decode_ingest_batch

NOW = 1_700_000_000_000


def raw(**fields: object) -> bytes:
    event = {"event_id": "e1", "type": "page_view", "user_id": "u1", "product_id": "p1", "ts": NOW}
    event.update(fields)
    return orjson.dumps({k: v for k, v in event.items() if v is not ...})


def test_valid_event_and_numeric_ids_become_strings() -> None:
    event = decode_event(raw(user_id=42, product_id=7), NOW, 60_000)
    assert (event.user_id, event.product_id, event.ts) == ("42", "7", NOW)


@pytest.mark.parametrize(
    ("value", "reason", "field"),
    [
        (b"{not json", "bad_json", "event"),
        (b"[1, 2]", "schema", "event"),
        (raw(type="refund"), "schema", "type"),
        (raw(ts="soon"), "schema", "ts"),
        (raw(ts=-1), "schema", "ts"),
        (raw(event_id=...), "schema", "event_id"),
        (raw(product_id=...), "schema", "product_id"),
        (raw(type="order_placed"), "schema", "price"),
        (raw(type="order_placed", price=-3), "schema", "price"),
        (raw(ts=NOW + 61_000), "future_ts", "ts"),
    ],
)
def test_invalid_events_are_named(value: bytes, reason: str, field: str) -> None:
    with pytest.raises(Invalid) as caught:
        decode_event(value, NOW, 60_000)
    assert (caught.value.reason, caught.value.field) == (reason, field)


def test_payment_needs_no_product() -> None:
    event = decode_event(raw(type="payment", product_id=..., price=9.5), NOW, 60_000)
    assert event.product_id is None


def batch(*events: bytes) -> bytes:
    return b'{"events": [' + b",".join(events) + b"]}"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (batch(raw(), raw(ts="x")), "events[1].ts"),
        (batch(raw(), raw(), raw(user_id=...)), "events[2].user_id"),
        (batch(raw(type="order_placed")), "events[0].price"),
        (batch(raw(product_id=None)), "events[0].product_id"),
        (batch(raw(ts=NOW + 3_600_000)), "events[0].ts"),
        (b'{"events": {}}', "events"),
        (b"{}", "events"),
        (b"[]", "body"),
        (b"nope", "body"),
        (batch(*[raw(event_id=f"e{i}") for i in range(1001)]), "events"),
    ],
)
def test_ingest_batch_names_index_and_field(body: bytes, field: str) -> None:
    with pytest.raises(Invalid) as caught:
        decode_ingest_batch(body, NOW, 60_000)
    assert caught.value.field == field


def test_ingest_batch_valid() -> None:
    events = decode_ingest_batch(batch(raw(), raw(event_id="e2", type="click")), NOW, 60_000)
    assert [e.event_id for e in events] == ["e1", "e2"]


@pytest.mark.parametrize(
    "value",
    [
        raw(),
        raw(user_id=42, product_id=7),
        raw(type="payment", product_id=..., price=9.5),
        raw(type="payment", product_id=...),
        raw(type="payment", price=None),
        raw(type="order_placed", price=12),
        raw(type="order_placed", price=0),
        raw(type="order_placed"),
        raw(type="order_placed", price=-3),
        raw(type="order_placed", price=None),
        raw(type="click", product_id=None),
        raw(type="click", product_id=""),
        raw(type="add_to_cart", product_id=...),
        raw(user_id=""),
        raw(user_id=True),
        raw(event_id=3),
        raw(ts=NOW + 60_000),
        raw(ts=NOW + 60_001),
        raw(ts=0),
        raw(extra={"nested": [1]}),
        b"{not json",
        b"[1, 2]",
        b"",
    ],
)
def test_judging_decodes_as_the_schema_and_its_rules_say(value: bytes) -> None:
    """Judging decodes most values straight into what aggregation reads; whatever it decodes so, and
    whatever it refuses, comes out as :func:`decode_event` decides: the same event, or the same
    reason."""
    out = prepare({0: [Rec(value)]}, {0: Checkpoint(0)}, now_ms=NOW, lateness_ms=60_000, max_future_ms=60_000)
    try:
        event = decode_event(value, NOW, 60_000)
    except Invalid as exc:
        assert [(r.reason, r.detail) for r in out.rejected] == [(exc.reason, f"{exc.field}: {exc.message}")]
        assert out.candidates == []
        return
    assert out.rejected == []
    product = "" if event.product_id is None else str(event.product_id)
    expected = JudgedEvent(
        event.event_id, event.type, str(event.user_id), event.ts, product, event.price or 0.0
    )
    assert out.candidates == [expected]


@dataclass
class Rec:
    value: bytes
    partition: int = 0
    offset: int = 0
    timestamp: int = NOW
    key: bytes | None = None
