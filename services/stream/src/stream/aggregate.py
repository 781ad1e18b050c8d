"""A batch's aggregate deltas, accumulated in memory piece by piece as the batch is judged: window
counts, HyperLogLog members, funnel stages, revenue, lateness, and what recommendations and risk
rules need once the flush has read the state store (see :mod:`stream.writes`).

Pure: no I/O, so it is tested without Kafka or Redis.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial

from stream.batch import JudgedEvent, Prepared
from stream.risk import CART_BUCKET_MS
from stream.windows import LATENESS_BOUNDS_MS, MINUTE_MS

__all__ = ["Deltas", "aggregate", "lateness_class"]

lateness_class = partial(bisect_left, LATENESS_BOUNDS_MS)


@dataclass(slots=True)
class Deltas:
    """A batch's deltas over its candidates, added piece by piece as the pieces are judged (while
    the previous batch is still being flushed), so that only what depends on the state store — which ids an
    earlier batch already counted, the users' sessions — is left for the flush itself.

    Every aggregate is keyed by what it writes (distinct keys and members, not events), and the
    additive ones are ``Counter``s built over zipped columns, so the per-event work happens in C.
    A candidate found already counted is subtracted again (:meth:`remove`, rare: only a duplicate
    of an event in an earlier batch, or a replay).
    """

    horizon_ms: int
    counts: Counter[tuple[int, str]] = field(default_factory=Counter)  # (minute, hash field) → n
    kinds: Counter[tuple[int, str, int]] = field(default_factory=Counter)  # (minute, type, lateness class)
    products: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # (type, minute, product or "")
    users: Counter[tuple[str, int, str]] = field(default_factory=Counter)  # (type, minute, user): HLLs
    events: dict[int, list[JudgedEvent]] = field(default_factory=dict)  # dedup bucket → candidates, in order
    lags: dict[int, list[int]] = field(default_factory=dict)  # … and how late each was
    # user → page views, in order
    views: dict[str, list[JudgedEvent]] = field(default_factory=lambda: defaultdict(list))
    carts: Counter[tuple[int, str, str]] = field(default_factory=Counter)  # (10 s bucket, user, product)
    orders: Counter[tuple[int, str]] = field(default_factory=Counter)  # (minute, user) → orders placed
    span: tuple[int, int] | None = None  # oldest and newest event time
    added: int = 0  # candidates of the batch added so far
    lag_ms: int = 0  # sum of how late the candidates were (the lateness histogram's sum)

    def add(self, prepared: Prepared) -> None:
        """Add the candidates ``prepared`` gained since the last call."""
        events, lags = prepared.candidates[self.added :], prepared.lags[self.added :]
        self.added = len(prepared.candidates)
        if not events:
            return
        times = [e.ts for e in events]
        minutes = [t - t % MINUTE_MS for t in times]
        kinds = [e.type for e in events]
        self.kinds.update(zip(minutes, kinds, map(lateness_class, lags), strict=True))
        self.lag_ms += sum(lags)
        self.products.update(zip(kinds, minutes, [e.product_id for e in events], strict=True))
        self.users.update(zip(kinds, minutes, [e.user_id for e in events], strict=True))
        buckets = [t // self.horizon_ms for t in times]
        if min(buckets) == max(buckets):  # the usual case
            self.events.setdefault(buckets[0], []).extend(events)
            self.lags.setdefault(buckets[0], []).extend(lags)
        else:
            for bucket, idx in _positions(buckets).items():
                self.events.setdefault(bucket, []).extend([events[i] for i in idx])
                self.lags.setdefault(bucket, []).extend([lags[i] for i in idx])
        views, carts, orders, counts = self.views, self.carts, self.orders, self.counts
        for event, kind in zip(events, kinds, strict=True):
            if kind == "page_view":
                views[event.user_id].append(event)
            elif kind == "add_to_cart":
                carts[(event.ts // CART_BUCKET_MS, event.user_id, event.product_id)] += 1
            elif kind == "order_placed":
                minute = event.ts - event.ts % MINUTE_MS
                orders[(minute, event.user_id)] += 1
                counts[(minute, "rev")] += round(event.price * 100)
        first, last = min(times), max(times)  # of all candidates: at worst one session bucket more is read
        span = self.span
        self.span = (first, last) if span is None else (min(span[0], first), max(span[1], last))

    def remove(self, already: list[tuple[JudgedEvent, int]]) -> None:
        """Take back candidates (with their lag) that an earlier batch counted: they are duplicates."""
        gone = set()
        counts = self.counts
        for event, lag in already:
            kind, minute, user = event.type, event.ts - event.ts % MINUTE_MS, event.user_id
            self.kinds[(minute, kind, lateness_class(lag))] -= 1
            self.lag_ms -= lag
            counts[(minute, "dup")] += 1
            self.products[(kind, minute, event.product_id)] -= 1
            self.users[(kind, minute, user)] -= 1
            if kind == "page_view":
                gone.add(event.event_id)
            elif kind == "add_to_cart":
                self.carts[(event.ts // CART_BUCKET_MS, user, event.product_id)] -= 1
            elif kind == "order_placed":
                self.orders[(minute, user)] -= 1
                counts[(minute, "rev")] -= round(event.price * 100)
        for user in {e.user_id for e, _ in already if e.event_id in gone}:
            kept = [e for e in self.views[user] if e.event_id not in gone]
            if kept:
                self.views[user] = kept
            else:
                del self.views[user]
        for counter in (self.products, self.users, self.carts, self.orders):
            for key in [k for k, n in counter.items() if n <= 0]:
                del counter[key]


def aggregate(prepared: Prepared, horizon_ms: int) -> Deltas:
    """The deltas of a whole judged batch at once (the consumer adds them piece by piece)."""
    deltas = Deltas(horizon_ms)
    deltas.add(prepared)
    return deltas


def _positions(values: list[int]) -> dict[int, list[int]]:
    """value → positions holding it."""
    out: dict[int, list[int]] = defaultdict(list)
    for i, value in enumerate(values):
        out[value].append(i)
    return out
