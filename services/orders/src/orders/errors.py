"""The domain's refusals, in its own words. ``api.ERRORS`` maps each to an HTTP status at the edge.

Each message is written for the client; the data a status mapping needs (which line, which product)
is on the exception as attributes, so no caller parses a message.
"""

from __future__ import annotations

from orders.models import Line

__all__ = [
    "Contention",
    "DuplicateLine",
    "KeyInProgress",
    "KeyReused",
    "NotFound",
    "OrdersError",
    "OutOfStock",
    "SkuTaken",
    "StockLimit",
    "UnknownProduct",
]


class OrdersError(Exception):
    """A request the domain refuses; never a bug (that stays a plain exception, a 500)."""


class NotFound(OrdersError):
    def __init__(self, what: str, id_: int) -> None:
        super().__init__(f"{what} {id_} not found")
        self.what = what
        self.id = id_


class UnknownProduct(OrdersError):
    """Line ``index`` names a product the catalogue does not have."""

    def __init__(self, index: int, product_id: int) -> None:
        super().__init__(f"product {product_id} not found")
        self.index = index
        self.product_id = product_id


class DuplicateLine(OrdersError):
    """Line ``index`` names a product an earlier line already named (one line per product)."""

    def __init__(self, index: int, product_id: int) -> None:
        super().__init__(f"product {product_id} is listed twice")
        self.index = index
        self.product_id = product_id


class OutOfStock(OrdersError):
    """``line`` cannot be covered; ``available`` is the stock seen, when known."""

    def __init__(self, line: Line, available: int | None = None) -> None:
        left = "" if available is None else f", {available} available"
        super().__init__(f"product {line.product_id} is out of stock: {line.quantity} requested{left}")
        self.line = line
        self.available = available


class KeyReused(OrdersError):
    def __init__(self) -> None:
        super().__init__("was already used with a different request body")


class KeyInProgress(OrdersError):
    """Another request with this idempotency key is placing its order right now."""

    def __init__(self) -> None:
        super().__init__("a request with this key is still in progress; retry")


class Contention(OrdersError):
    """InnoDB kept aborting the transaction over locks (``reason``) after every retry; the client may
    retry later."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"too much contention ({reason}); retry")
        self.reason = reason


class SkuTaken(OrdersError):
    def __init__(self, sku: str) -> None:
        super().__init__(f"a product with sku {sku!r} already exists")
        self.sku = sku


class StockLimit(OrdersError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"stock would exceed {limit}")
        self.limit = limit
