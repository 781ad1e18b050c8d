"""The flush transaction against real Redis: all or nothing, fenced by the stored offsets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from stream_testkit import REDIS_URL

from stream.keys import Keys
from stream.risk import risk_ops
from stream.state import Fenced, Ops, Reply, flush, lua_bytes

FLUSH: dict[str, Any] = {"alerts_kept": 100, "alerts_topic": "alerts"}


async def test_deltas_and_offsets_commit_together(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await redis.sadd(keys.seen(1), "old")
    await redis.hset(keys.sessions(7), "u1", '[["p", 1]]')
    await redis.hset(keys.sessions(6), mapping={"u1": "stale", "u2": '[["q", 2]]'})
    sessions = [[keys.sessions(7), "u1", "u2", "u3"], [keys.sessions(6), "u1", "u2", "u3"]]  # newest first
    seen_replies: list[Reply] = []

    def build(reply: Reply) -> Ops:
        seen_replies.append(reply)
        ops = Ops(newest=1234, newest_key=keys.newest)
        ops.h.append([keys.minute(0), 60, "page_view", 2, "rev", 1999])
        ops.sa.append([keys.seen(1), "new"])
        ops.sa_ttl = 60
        ops.ob.append(["dlq", lua_bytes(b"\xff\x00key"), '{"reason": "late"}', "late"])
        ops.set += [keys.offset("t", 0), "10:1234"]
        return ops

    fired = await flush(redis, keys, "t", {0: None}, [[keys.seen(1), "old", "new"]], sessions, build, **FLUSH)
    assert fired == []
    assert seen_replies == [Reply(["10"], {"u1": '[["p", 1]]', "u2": '[["q", 2]]'})]  # u3: no session
    assert await redis.hgetall(keys.minute(0)) == {b"page_view": b"2", b"rev": b"1999"}
    assert await redis.get(keys.offset("t", 0)) == b"10:1234"
    assert await redis.get(keys.newest) == b"1234"
    assert await redis.smembers(keys.seen(1)) == {b"old", b"new"}
    [(_, fields)] = await redis.xrange(keys.outbox)
    assert fields == {b"t": b"dlq", b"k": b"\xff\x00key", b"v": b'{"reason": "late"}', b"r": b"late"}


async def test_stale_expected_offset_is_fenced_and_writes_nothing(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await redis.set(keys.offset("t", 3), "50:0")  # another consumer got further

    def build(reply: Reply) -> Ops:
        raise AssertionError("must not build a batch that was fenced")

    with pytest.raises(Fenced):
        await flush(redis, keys, "t", {3: "20:0"}, [], [], build, **FLUSH)
    assert await redis.get(keys.offset("t", 3)) == b"50:0"


async def test_offset_moved_during_the_flush_aborts_it(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    rival = SyncRedis.from_url(REDIS_URL)

    def build(reply: Reply) -> Ops:
        rival.set(keys.offset("t", 0), "7:0")  # another consumer commits between our read and EXEC
        return Ops(
            newest_key=keys.newest, h=[[keys.minute(0), 60, "click", 1]], set=[keys.offset("t", 0), "5:0"]
        )

    try:
        with pytest.raises(Fenced):
            await flush(redis, keys, "t", {0: None}, [], [], build, **FLUSH)
    finally:
        rival.close()
    assert await redis.exists(keys.minute(0)) == 0
    assert await redis.get(keys.offset("t", 0)) == b"7:0"


USER = 'u"1/\\ü'  # the apply script writes the alert JSON: ids must come out escaped


async def test_risk_alert_fires_once_when_the_counter_crosses(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    fired_per_flush = []
    stored = None
    for n, (orders, carts) in enumerate([(3, {"a", "b"}), (4, {"b", "c", "d"}), (2, {"e", "f"})]):
        ops = Ops(newest_key=keys.newest, set=[keys.offset("t", 0), f"{n}:0"])
        risk_ops(
            ops,
            keys,
            {(60_000, USER): orders},
            {(7, "u2"): carts},
            orders_per_minute=5,
            cart_products_per_10s=4,
            ttl_s=60,
        )
        fired_per_flush.append(
            await flush(redis, keys, "t", {0: stored}, [], [], lambda _, ops=ops: ops, **FLUSH)
        )
        stored = f"{n}:0"
    assert fired_per_flush == [[], ["order_velocity"], ["cart_spree"]]
    alerts = [orjson.loads(a) for a in await redis.lrange(keys.alerts, 0, -1)]
    assert [(a["rule"], a["user_id"], a["count"], a["threshold"]) for a in alerts] == [
        ("cart_spree", "u2", 6, 4),
        ("order_velocity", USER, 7, 5),
    ]
    assert alerts[1]["alert_id"] == f"order_velocity:{USER}:60000"
    assert (alerts[0]["window_start"], alerts[0]["window_end"]) == (70_000, 80_000)
    assert await redis.xlen(keys.outbox) == 2
