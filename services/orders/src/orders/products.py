"""Products: the catalogue and its stock as the API shows it; restocks are recorded for the audit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiomysql
import pymysql

from orders.db import transaction
from orders.errors import NotFound, SkuTaken, StockLimit
from orders.models import MAX_STOCK, NewProduct

__all__ = ["Product", "create_product", "get_product", "list_products", "restock"]

DUPLICATE_KEY = 1062
_COLUMNS = "id, sku, name, price_cents, stock, created_at"


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    sku: str
    name: str
    price_cents: int
    stock: int
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sku": self.sku,
            "name": self.name,
            "price_cents": self.price_cents,
            "stock": self.stock,
            "created_at": self.created_at.isoformat(timespec="milliseconds") + "Z",
        }


async def create_product(pool: aiomysql.Pool, new: NewProduct) -> Product:
    """Insert a product; :class:`SkuTaken` when the SKU is."""
    try:
        async with transaction(pool) as cur:
            await cur.execute(
                "INSERT INTO products (sku, name, price_cents, initial_stock, stock, created_at) "
                "VALUES (%s, %s, %s, %s, %s, UTC_TIMESTAMP(6))",
                (new.sku, new.name, new.price_cents, new.stock, new.stock),
            )
            product = await _load(cur, cur.lastrowid)
    except pymysql.err.IntegrityError as exc:
        if exc.args[0] == DUPLICATE_KEY:
            raise SkuTaken(new.sku) from None
        raise
    assert product is not None
    return product


async def get_product(pool: aiomysql.Pool, product_id: int) -> Product:
    async with transaction(pool) as cur:
        product = await _load(cur, product_id)
    if product is None:
        raise NotFound("product", product_id)
    return product


async def list_products(pool: aiomysql.Pool, *, limit: int, offset: int) -> tuple[list[Product], int]:
    """A page of products by id, and how many there are in all."""
    async with transaction(pool) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM products ORDER BY id LIMIT %s OFFSET %s", (limit, offset))  # noqa: S608
        rows = await cur.fetchall()
        await cur.execute("SELECT COUNT(*) FROM products")
        (count,) = await cur.fetchone()
    return [Product(*row) for row in rows], int(count)


async def restock(pool: aiomysql.Pool, product_id: int, quantity: int) -> Product:
    """Add stock and record the restock (the audit counts it); stock stays ≤ the model's maximum."""
    async with transaction(pool) as cur:
        changed = await cur.execute(
            "UPDATE products SET stock = stock + %s WHERE id = %s AND stock <= %s",
            (quantity, product_id, MAX_STOCK - quantity),
        )
        if changed == 0:
            if await _load(cur, product_id) is None:
                raise NotFound("product", product_id)
            raise StockLimit(MAX_STOCK)
        await cur.execute(
            "INSERT INTO restocks (product_id, quantity, created_at) VALUES (%s, %s, UTC_TIMESTAMP(6))",
            (product_id, quantity),
        )
        product = await _load(cur, product_id)
    assert product is not None
    return product


async def _load(cur: aiomysql.Cursor, product_id: int) -> Product | None:
    await cur.execute(f"SELECT {_COLUMNS} FROM products WHERE id = %s", (product_id,))  # noqa: S608
    row = await cur.fetchone()
    return Product(*row) if row is not None else None
