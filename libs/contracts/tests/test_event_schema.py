"""The events topic's schema: what the builders make decodes to itself; what does not fit is refused."""

from __future__ import annotations

import msgspec
import orjson
import pytest

from contracts.events import Event, OrderEventType, OrderLine, decode, encode, order_line_events

LINES = [
    OrderLine(product_id=3, quantity=2, price_cents=1250),
    OrderLine(product_id=9, quantity=1, price_cents=99),
]


def test_order_lines_become_one_priced_event_each_with_stable_ids() -> None:
    placed = order_line_events("abc", "order_placed", "u1", 1_700_000_000_000, LINES)
    assert [(e.event_id, e.type, e.user_id, e.product_id, e.price) for e in placed] == [
        ("abc-3", "order_placed", "u1", 3, 25.0),
        ("abc-9", "order_placed", "u1", 9, 0.99),
    ]
    assert order_line_events("abc", "order_placed", "u1", 1_700_000_000_000, LINES) == placed


@pytest.mark.parametrize("kind", ["order_placed", "payment"])
def test_what_the_builder_makes_decodes_to_itself(kind: OrderEventType) -> None:
    for event in order_line_events("e1", kind, "u1", 5, LINES):
        assert decode(encode(event)) == event


def test_the_wire_format_is_a_flat_json_object() -> None:
    (event,) = order_line_events("e1", "payment", "u7", 5, LINES[:1])
    assert orjson.loads(encode(event)) == {
        "event_id": "e1-3",
        "type": "payment",
        "user_id": "u7",
        "ts": 5,
        "product_id": 3,
        "price": 25.0,
    }


def test_optional_fields_may_be_left_out_and_ids_may_be_numbers() -> None:
    assert decode(b'{"event_id": "x", "type": "click", "user_id": 4, "ts": 0}') == Event("x", "click", 4, 0)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event_id": "x", "type": "refund", "user_id": "u", "ts": 1}',  # not a type of the topic
        b'{"event_id": "", "type": "click", "user_id": "u", "ts": 1}',  # empty id
        b'{"event_id": "x", "type": "click", "user_id": "u", "ts": -1}',  # before the epoch
        b'{"event_id": "x", "type": "payment", "user_id": "u", "ts": 1, "price": -1}',
        b'{"type": "click", "user_id": "u", "ts": 1}',  # no id
    ],
)
def test_what_does_not_fit_is_refused(raw: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(raw)
