"""The baseline ``make bench-orders`` measures against: the classic blog post's async order API.

The post ("build an async order API with aiohttp and aiomysql") shows one ``create_order`` handler in
one aiohttp process: an aiomysql pool (``minsize=5, maxsize=20``), and per order ``SELECT … FOR
UPDATE`` on the product row, ``UPDATE`` the stock, ``INSERT`` the order, ``COMMIT``, then the
fulfilment started with ``asyncio.create_task`` and never awaited (nobody owns it: a shutdown or a
garbage-collected task loses it). :func:`create_order` below is that handler in the post's own
idiom (string app keys, ``request.json()``, the user id in the body, the default asyncio loop); it
ignores the ``Authorization`` and ``Idempotency-Key`` headers the benchmark's clients send. The
fulfilment only waits (the post's stand-in for payment and e-mail), which is generous to it.

``python -m loadtests.bench.orders_article`` serves it on ``ARTICLE_PORT`` against ``MYSQL_URL``, whose
database the benchmark creates with :func:`create_schema` (its own database, its own two tables).
"""

from __future__ import annotations

import asyncio
import logging
import os

import aiomysql
from aiohttp import web

from asynccore.pools.mysql import ensure_database, parse_mysql_url

__all__ = ["SCHEMA", "build_app", "create_order", "create_schema", "main"]

log = logging.getLogger("article")

SCHEMA = [
    "CREATE TABLE products (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) NOT NULL,"
    " price DECIMAL(10, 2) NOT NULL, stock INT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, user_id INT NOT NULL,"
    " product_id INT NOT NULL, quantity INT NOT NULL, total DECIMAL(10, 2) NOT NULL,"
    " status VARCHAR(20) NOT NULL DEFAULT 'pending',"
    " created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB",
]
FULFILMENT_S = 0.5


# ---------------------------------------------------------------------------- the article's code


async def process_order(order_id: int) -> None:
    await asyncio.sleep(FULFILMENT_S)  # charge the card, e-mail the customer
    log.info("order %s processed", order_id)


async def create_order(request: web.Request) -> web.Response:
    data = await request.json()
    user_id, product_id, quantity = data["user_id"], data["product_id"], data["quantity"]
    pool = request.app["db"]
    async with pool.acquire() as conn, conn.cursor() as cur:
        await conn.begin()
        try:
            await cur.execute("SELECT price, stock FROM products WHERE id = %s FOR UPDATE", (product_id,))
            product = await cur.fetchone()
            if product is None:
                await conn.rollback()
                return web.json_response({"error": "product not found"}, status=404)
            price, stock = product
            if stock < quantity:
                await conn.rollback()
                return web.json_response({"error": "insufficient stock"}, status=409)
            await cur.execute("UPDATE products SET stock = stock - %s WHERE id = %s", (quantity, product_id))
            await cur.execute(
                "INSERT INTO orders (user_id, product_id, quantity, total) VALUES (%s, %s, %s, %s)",
                (user_id, product_id, quantity, price * quantity),
            )
            order_id = cur.lastrowid
            await conn.commit()
        except Exception:
            await conn.rollback()
            raise
    asyncio.create_task(process_order(order_id))  # noqa: RUF006 — the article's fire-and-forget
    return web.json_response(
        {"id": order_id, "status": "pending", "total": str(price * quantity)}, status=201
    )


async def get_product(request: web.Request) -> web.Response:
    async with request.app["db"].acquire() as conn, conn.cursor() as cur:
        await cur.execute(
            "SELECT id, name, price, stock FROM products WHERE id = %s", (request.match_info["id"],)
        )
        row = await cur.fetchone()
    if row is None:
        return web.json_response({"error": "product not found"}, status=404)
    return web.json_response({"id": row[0], "name": row[1], "price": str(row[2]), "stock": row[3]})


async def init_db(app: web.Application) -> None:
    target = parse_mysql_url(os.environ["MYSQL_URL"])
    app["db"] = await aiomysql.create_pool(
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password,
        db=target.database,
        minsize=5,
        maxsize=20,
    )


async def close_db(app: web.Application) -> None:
    app["db"].close()
    await app["db"].wait_closed()


def build_app() -> web.Application:
    app = web.Application()
    app.on_startup.append(init_db)
    app.on_cleanup.append(close_db)
    app.router.add_post("/orders", create_order)
    app.router.add_get("/products/{id}", get_product)
    return app


# ---------------------------------------------------------------------------- the benchmark's side


async def create_schema(url: str, *, stock: int) -> int:
    """Create ``url``'s database and the article's tables; one product with ``stock``; its id."""
    await ensure_database(url)
    target = parse_mysql_url(url)
    conn = await aiomysql.connect(
        host=target.host, port=target.port, user=target.user, password=target.password, db=target.database
    )
    try:
        async with conn.cursor() as cur:
            for statement in SCHEMA:
                await cur.execute(statement)
            await cur.execute(
                "INSERT INTO products (name, price, stock) VALUES ('hot product', 19.99, %s)", (stock,)
            )
            product = int(cur.lastrowid)
        await conn.commit()
    finally:
        conn.close()
    return product


def main() -> None:
    web.run_app(build_app(), host="127.0.0.1", port=int(os.environ["ARTICLE_PORT"]), print=None)


if __name__ == "__main__":
    main()
