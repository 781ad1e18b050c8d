"""Test scenarios and their ground truth, computed here independently of the service's code.

The rules, as the issue states them: malformed (bad JSON, schema, product missing for product
events, price missing for orders, ts in the future) → invalid; ts more than the allowed lateness
behind the newest ts seen so far *in its partition* → late; an event_id already counted → duplicate;
everything else counts once.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

TYPES = ("page_view", "click", "add_to_cart", "order_placed", "payment")
LATENESS_MS = 60_000


@dataclass
class Truth:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TYPES, 0))
    revenue_cents: int = 0
    late: int = 0
    invalid: int = 0
    duplicates: int = 0
    users: set[str] = field(default_factory=set)
    dead_letters: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset)

    def total(self) -> int:
        return sum(self.counts.values())


def judge(partitions: dict[int, list[bytes]], now_ms: int, lateness_ms: int = LATENESS_MS) -> Truth:
    truth = Truth()
    counted: set[str] = set()
    for partition, values in partitions.items():
        newest = 0
        for offset, raw in enumerate(values):
            event = _valid(raw, now_ms)
            if event is None:
                truth.invalid += 1
                truth.dead_letters.add((partition, offset))
                continue
            if newest - event["ts"] > lateness_ms:
                truth.late += 1
                truth.dead_letters.add((partition, offset))
                continue
            newest = max(newest, event["ts"])
            if event["event_id"] in counted:
                truth.duplicates += 1
                continue
            counted.add(event["event_id"])
            truth.counts[event["type"]] += 1
            truth.users.add(str(event["user_id"]))
            if event["type"] == "order_placed":
                truth.revenue_cents += round(event["price"] * 100)
    return truth


def _valid(raw: bytes, now_ms: int) -> dict | None:
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    if not isinstance(event.get("event_id"), str) or event.get("type") not in TYPES:
        return None
    if not isinstance(event.get("user_id"), str | int) or isinstance(event.get("user_id"), bool):
        return None
    ts = event.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0 or ts > now_ms + 60_000:
        return None
    if event["type"] in ("page_view", "click", "add_to_cart") and event.get("product_id") is None:
        return None
    if event["type"] == "order_placed" and not isinstance(event.get("price"), int | float):
        return None
    return event


def scenario(
    partitions: int, per_partition: int, *, seed: int = 7, t0: int | None = None, ids: str = "e"
) -> dict[int, list[bytes]]:
    """Per partition, in order: mostly good events with a jittered clock, plus late, duplicate and
    malformed ones. Users are pinned to partitions, as keying by user does; event ids are
    ``<ids><partition>-<i>``."""
    rng = random.Random(seed)
    start = t0 if t0 is not None else time.time_ns() // 1_000_000 - 30 * 60_000
    out: dict[int, list[bytes]] = {}
    for p in range(partitions):
        clock = start
        values: list[bytes] = []
        for i in range(per_partition):
            clock += rng.randrange(0, 40)
            roll = rng.random()
            if roll < 0.01 and values:
                values.append(rng.choice(values))  # a duplicate (or a repeat of a bad one)
                continue
            if roll < 0.02:
                values.append(rng.choice([b"{broken", b"[1, 2]", b'{"event_id": "x", "type": "nope"}']))
                continue
            kind = rng.choices(TYPES, (50, 20, 15, 10, 5))[0]
            ts = clock
            if roll < 0.03:
                ts = clock - rng.randrange(61_000, 600_000)  # late
            elif roll < 0.08:
                ts = clock - rng.randrange(0, 59_000)  # out of order, within the lateness
            elif roll < 0.085:
                ts = time.time_ns() // 1_000_000 + 3_600_000  # from the future
            event: dict[str, object] = {
                "event_id": f"{ids}{p}-{i}",
                "type": kind,
                "user_id": f"u{p}-{rng.randrange(300)}",
                "ts": ts,
            }
            if kind != "payment" or rng.random() < 0.5:
                event["product_id"] = f"p{rng.randrange(200)}"
            if kind in ("order_placed", "payment"):
                event["price"] = round(rng.uniform(1, 300), 2)
            if roll > 0.998:
                del event["user_id"]  # schema violation
            values.append(json.dumps(event).encode())
        out[p] = values
    return out
