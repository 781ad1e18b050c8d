"""The orders benchmark's own pieces against real servers: wrk's order script and the article's handler.

The script runs in the real wrk for 1 s against a small aiohttp server that records every request, so
"a fresh key on every order, the buyers in turn" is checked on what arrived. The article's
``create_order`` runs in this process against the real MariaDB, in a database of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web

from asynccore.pools.mysql import drop_database
from asynccore.testing import free_port
from loadtests.bench import orders_article
from loadtests.bench.orders import (
    MYSQL_SERVER,
    Api,
    Cost,
    Flash,
    Replays,
    lua_orders,
    median_sale,
    query,
    stock_and_sold,
)
from loadtests.bench.wrk import run_wrk


async def _recording_server(seen: list[tuple[str | None, str | None, bytes]]) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.Response:
        seen.append(
            (
                request.headers.get("Authorization"),
                request.headers.get("Idempotency-Key"),
                await request.read(),
            )
        )
        return web.json_response({"id": len(seen)}, status=201)

    app = web.Application()
    app.router.add_post("/api/orders", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("keyed", [True, False])
async def test_wrk_sends_a_fresh_key_on_every_order_and_each_buyer_in_turn(keyed: bool) -> None:
    seen: list[tuple[str | None, str | None, bytes]] = []
    runner, url = await _recording_server(seen)
    tokens = ["Token a", "Token b", "Token c"]
    body = b'{"items": [{"product_id": 7, "quantity": 1}]}'
    try:
        result = await run_wrk(
            f"{url}/api/orders",
            connections=4,
            duration_s=1,
            threads=1,
            lua=lua_orders(body, tokens, "run-r1-p0-" if keyed else None),
        )
    finally:
        await runner.cleanup()
    assert result.requests > 10 and result.errors == 0
    assert {sent for _, _, sent in seen} == {body}
    by_token = Counter(token for token, _, _ in seen)
    assert set(by_token) == set(tokens)
    assert max(by_token.values()) - min(by_token.values()) <= 4  # in turn, give or take the last round
    keys = [key for _, key, _ in seen]
    if keyed:
        assert all(key is not None and key.startswith("run-r1-p0-") for key in keys)
        assert len(set(keys)) == len(keys)  # never the same key twice
    else:
        assert keys == [None] * len(seen)


@pytest.fixture
async def article(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, str, int]]:
    """The article's app in this process on its own database: (base URL, database URL, product id)."""
    db = f"{MYSQL_SERVER}/orders_article_t_{uuid.uuid4().hex[:10]}"
    product = await orders_article.create_schema(db, stock=3)
    monkeypatch.setenv("MYSQL_URL", db)
    monkeypatch.setattr(orders_article, "FULFILMENT_S", 0.0)
    runner = web.AppRunner(orders_article.build_app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", db, product
    finally:
        await runner.cleanup()
        await drop_database(db)


@pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")  # the article's string keys
async def test_the_articles_handler_sells_the_stock_once(article: tuple[str, str, int]) -> None:
    url, db, product = article
    async with ClientSession() as session:

        async def buy(user: int) -> int:
            order = {"user_id": user, "product_id": product, "quantity": 1}
            async with session.post(f"{url}/orders", json=order) as resp:
                return resp.status

        statuses = await asyncio.gather(*(buy(user) for user in range(8)))
        async with session.get(f"{url}/products/{product}") as resp:
            assert (await resp.json())["stock"] == 0
    assert sorted(statuses) == [201] * 3 + [409] * 5
    assert await stock_and_sold(Api("article", db), product) == (0, 3)
    assert await query(db, "SELECT COUNT(*), CAST(SUM(total) * 100 AS SIGNED) FROM orders") == [(3, 5997)]
    await asyncio.sleep(0.05)  # the untracked fulfilment tasks (0 s here) finish before the loop closes


def _sale(seconds: float, *, invariant: bool = True, wrong: int = 0, others: int = 0) -> Flash:
    return Flash(
        successes=100,
        conflicts=900 - others,
        others=others,
        other_statuses="503 x1" if others else "",
        sell_out_s=seconds / 2,
        seconds=seconds,
        p99_ms=seconds * 1000,
        stock_left=0,
        invariant=invariant,
        cost=Cost(0.1, 0.05, {}),
        replays=Replays(30, wrong, "k: 201, was 409" if wrong else ""),
    )


def test_a_rounds_flash_sale_is_its_median_sale_with_every_sale_checked() -> None:
    """The round's figures are one real sale's, the median by orders/s (the lower middle of an even
    number); an oversell, a wrong replay or an odd status in any sale of the round still shows."""
    fast, middle, slow = _sale(0.1), _sale(0.2), _sale(0.4, invariant=False, wrong=1, others=1)
    kept = median_sale([slow, fast, middle])
    assert (kept.seconds, kept.p99_ms, kept.orders_per_s) == (0.2, 200.0, 5000.0)
    assert not kept.invariant
    assert (kept.replays.checked, kept.replays.wrong, kept.replays.detail) == (90, 1, "k: 201, was 409")
    assert kept.other_statuses == "503 x1 (another sale)"
    assert median_sale([fast, middle, _sale(0.3), _sale(0.5)]).seconds == 0.3
    assert median_sale([middle]) == middle
