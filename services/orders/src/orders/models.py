"""Request bodies, validated strictly: a bad field is a 422 that names it, never a 500 later on."""

from __future__ import annotations

from typing import Annotated, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from asynccore.errors import ApiError

__all__ = ["NewOrder", "NewProduct", "OrderLine", "Restock", "StrictModel", "field_name", "parse_body"]

M = TypeVar("M", bound=BaseModel)

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


def field_name(loc: tuple[int | str, ...]) -> str:
    """``('items', 0, 'quantity')`` → ``items[0].quantity``: how a client would point at the field."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The JSON body as ``model``; 422 naming each bad field (or ``body`` when it is not JSON)."""
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for err in exc.errors(include_url=False):
            errors.setdefault(field_name(err["loc"]), []).append(err["msg"])
        raise ApiError(422, next(iter(errors)), "", errors=errors) from None
