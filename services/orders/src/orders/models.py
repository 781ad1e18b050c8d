"""Request bodies as strict models (``asynccore.web.read_json`` reads them: a bad field is a 422 that
names it, never a 500 later on), and :class:`Line`, an order line once priced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Line", "NewOrder", "NewProduct", "OrderLine", "Restock", "StrictModel"]

MAX_QUANTITY = 1000
MAX_STOCK = 1_000_000_000
MAX_PRICE_CENTS = 100_000_000_00


class StrictModel(BaseModel):
    """Strict types (no "5" for 5), frozen."""

    model_config = ConfigDict(strict=True, frozen=True)


class NewProduct(StrictModel):
    sku: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    price_cents: Annotated[int, Field(ge=0, le=MAX_PRICE_CENTS)]
    stock: Annotated[int, Field(ge=0, le=MAX_STOCK)]


class Restock(StrictModel):
    quantity: Annotated[int, Field(gt=0, le=MAX_STOCK)]


class OrderLine(StrictModel):
    product_id: Annotated[int, Field(gt=0, lt=2**63)]
    quantity: Annotated[int, Field(gt=0, le=MAX_QUANTITY)]


class NewOrder(StrictModel):
    items: Annotated[list[OrderLine], Field(min_length=1, max_length=50)]

    def duplicate_line(self) -> int | None:
        """Index of the first line naming a product an earlier line already named (one line per product)."""
        seen: set[int] = set()
        for index, line in enumerate(self.items):
            if line.product_id in seen:
                return index
            seen.add(line.product_id)
        return None


@dataclass(frozen=True, slots=True)
class Line:
    """One order line priced, as stored: ``index`` is its position in the request (for error messages)."""

    index: int
    product_id: int
    quantity: int
    price_cents: int
