"""Recent stock sightings, so buyers queued behind a sold-out read get their 409 without a query.

When a flash sale sells out, hundreds of requests are still waiting for a pool connection. Each one
would read the row only to learn that it is gone. Instead, every stock read is remembered with the
moment it was sent; a request that finally gets its connection first asks whether a read sent
*after the request arrived* already showed too little stock. If so, that read happened during this
request's lifetime, so answering 409 from it is exactly as true as reading again. Reads only ever
reject; the conditional UPDATE under the row lock still decides who gets the stock.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from orders.models import NewOrder

__all__ = ["Sightings"]

KEPT_PRODUCTS = 10_000


class Sightings:
    def __init__(self, limit: int = KEPT_PRODUCTS) -> None:
        self.limit = limit
        self._seen: OrderedDict[int, tuple[int, float]] = OrderedDict()  # id → (stock, read sent at)

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def note(self, product_id: int, stock: int, sent_at: float) -> None:
        """A read sent at ``sent_at`` found ``stock``; the newest read of a product wins."""
        known = self._seen.get(product_id)
        if known is None or sent_at >= known[1]:
            self._seen[product_id] = (stock, sent_at)
            self._seen.move_to_end(product_id)
            if len(self._seen) > self.limit:
                self._seen.popitem(last=False)

    def short_line(self, request: NewOrder, since: float) -> tuple[int, int] | None:
        """``(index, stock seen)`` of a line that a read sent at or after ``since`` could not cover."""
        for index, item in enumerate(request.items):
            known = self._seen.get(item.product_id)
            if known is not None and known[1] >= since and known[0] < item.quantity:
                return index, known[0]
        return None
