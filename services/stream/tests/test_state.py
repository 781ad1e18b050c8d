"""The flush transaction against real Redis: all or nothing, fenced by the stored checkpoints; and
the two Lua scripts called directly with small documents, field by field."""

from __future__ import annotations

import msgspec
import orjson
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from stream_testkit import REDIS_URL

from stream import state
from stream.keys import Keys
from stream.risk import CartSpree, OrderVelocity, rule_counters
from stream.state import APPLY_LUA, READ_LUA, Fenced
from stream.writes import (
    Checkpointed,
    DeadLetter,
    Found,
    Increments,
    Members,
    Newest,
    Plan,
    ReadGroup,
    WriteSet,
)

ALERTS = {"alerts_kept": 100, "alerts_topic": "alerts"}
NO_READS = Plan(seen=[], seen_buckets=[], sessions=[])


def write_set(keys: Keys, checkpoint: str, newest: int = 0) -> WriteSet:
    return WriteSet(
        Newest(keys.newest, newest),
        OrderVelocity("order_velocity", 5, []),
        CartSpree("cart_spree", 4, []),
        checkpoints=[Checkpointed(keys.checkpoint("t", 0), checkpoint)],
    )


async def test_deltas_and_checkpoints_commit_together(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await redis.sadd(keys.seen(1), "old")
    await redis.hset(keys.sessions(7), "u1", '[["p", 1]]')
    await redis.hset(keys.sessions(6), mapping={"u1": "stale", "u2": '[["q", 2]]'})
    users = ["u1", "u2", "u3"]
    the_plan = Plan(
        seen=[ReadGroup(keys.seen(1), ["old", "new"])],
        seen_buckets=[1],
        sessions=[ReadGroup(keys.sessions(7), users), ReadGroup(keys.sessions(6), users)],  # newest first
    )
    writes = write_set(keys, "10:1234", newest=1234)
    writes.hashes.append(Increments(keys.minute(0), 60, ["page_view", 2, "rev", 1999]))
    writes.seen.append(Members(keys.seen(1), 60, ["new"]))
    writes.dead_letters.append(DeadLetter("dlq", b"\xff\x00key", '{"reason": "late"}', "late"))

    async with state.transaction(redis, keys, "t", {0: None}) as tx:
        found = await tx.read(the_plan)
        assert found == Found(["10"], {"u1": '[["p", 1]]', "u2": '[["q", 2]]'})  # u3: no session
        fired = await tx.apply(writes, **ALERTS)
    assert fired == []
    assert await redis.hgetall(keys.minute(0)) == {b"page_view": b"2", b"rev": b"1999"}
    assert await redis.get(keys.checkpoint("t", 0)) == b"10:1234"
    assert await redis.get(keys.newest) == b"1234"
    assert await redis.smembers(keys.seen(1)) == {b"old", b"new"}
    [(_, fields)] = await redis.xrange(keys.outbox)
    assert fields == {b"t": b"dlq", b"k": b"\xff\x00key", b"v": b'{"reason": "late"}', b"r": b"late"}


async def test_stale_expected_checkpoint_is_fenced_and_writes_nothing(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    await redis.set(keys.checkpoint("t", 3), "50:0")  # another consumer got further

    with pytest.raises(Fenced):
        async with state.transaction(redis, keys, "t", {3: "20:0"}) as tx:
            await tx.read(NO_READS)
            raise AssertionError("must not build a batch that was fenced")
    assert await redis.get(keys.checkpoint("t", 3)) == b"50:0"


async def test_checkpoint_moved_during_the_flush_aborts_it(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    rival = SyncRedis.from_url(REDIS_URL)
    writes = write_set(keys, "5:0")
    writes.hashes.append(Increments(keys.minute(0), 60, ["click", 1]))
    try:
        with pytest.raises(Fenced):
            async with state.transaction(redis, keys, "t", {0: None}) as tx:
                await tx.read(NO_READS)
                rival.set(keys.checkpoint("t", 0), "7:0")  # another consumer commits between read and EXEC
                await tx.apply(writes, **ALERTS)
    finally:
        rival.close()
    assert await redis.exists(keys.minute(0)) == 0
    assert await redis.get(keys.checkpoint("t", 0)) == b"7:0"


USER = 'u"1/\\ü'  # the apply script writes the alert JSON: ids must come out escaped


async def test_risk_alert_fires_once_when_the_counter_crosses(redis: Redis, prefix: str) -> None:
    keys = Keys(prefix)
    fired_per_flush = []
    stored = None
    for n, (orders, carts) in enumerate([(3, ["a", "b"]), (4, ["b", "c", "d"]), (2, ["e", "f"])]):
        writes = write_set(keys, f"{n}:0")
        writes.order_velocity, writes.cart_spree = rule_counters(
            keys,
            {(60_000, USER): orders},
            {(7, "u2"): carts},
            orders_per_minute=5,
            cart_products_per_10s=4,
            ttl_s=60,
        )
        async with state.transaction(redis, keys, "t", {0: stored}) as tx:
            await tx.read(NO_READS)
            fired_per_flush.append(await tx.apply(writes, **ALERTS))
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


# The scripts on their own: documents written by hand, so the named fields are the contract.

pack = msgspec.msgpack.encode


async def test_read_script_answers_checkpoints_seen_ids_and_sessions_by_name(
    redis: Redis, prefix: str
) -> None:
    cp0, cp1 = f"{prefix}cp:0", f"{prefix}cp:1"
    await redis.set(cp0, "4:100")
    await redis.sadd(f"{prefix}seen", *[f"id{i}" for i in range(0, 2500, 2)])  # even ids counted
    await redis.hset(f"{prefix}s", mapping={"u1": "session-1"})
    ids = [f"id{i}" for i in range(2500)]  # more than one call's worth of members
    request = {
        "seen": [{"key": f"{prefix}seen", "members": ids}],
        "sessions": [{"key": f"{prefix}s", "members": ["u1", "u2"]}],
    }
    found = msgspec.msgpack.decode(await redis.eval(READ_LUA, 2, cp0, cp1, pack(request)))
    assert found["checkpoints"] == ["4:100", False]
    assert found["seen"] == ["".join("1" if i % 2 == 0 else "0" for i in range(2500))]
    assert found["sessions"] == [["session-1", False]]


async def test_apply_script_writes_each_named_field(redis: Redis, prefix: str) -> None:
    k = prefix
    await redis.hset(f"{k}h", "a", 5)
    await redis.set(f"{k}newest", 900)
    await redis.hset(f"{k}ro", "u1", 2)  # order counter at 2: +1 crosses a threshold of 2
    document = {
        "hashes": [{"key": f"{k}h", "ttl": 100, "deltas": ["a", 1, "b", 2]}],
        "sorted_sets": [{"key": f"{k}z", "ttl": 100, "deltas": ["p1", 3, "p2", 1]}],
        "hyperloglogs": [{"key": f"{k}u", "ttl": 100, "members": ["u1", "u2", "u1"]}],
        "seen": [{"key": f"{k}seen", "ttl": 100, "members": ["e1", "e2"]}],
        "sessions": [{"key": f"{k}s", "ttl": 100, "members": ["u1", "[]", "u2", '[["p", 1]]']}],
        "checkpoints": [{"key": f"{k}cp:0", "value": "10:1000"}],
        "newest": {"key": f"{k}newest", "ts": 1000},
        "order_velocity": {
            "rule": "order_velocity",
            "threshold": 2,
            "counts": [
                {
                    "key": f"{k}ro",
                    "ttl": 100,
                    "user": "u1",
                    "n": 1,
                    "window_start": "0",
                    "window_end": "60000",
                }
            ],
        },
        "cart_spree": {
            "rule": "cart_spree",
            "threshold": 5,
            "adds": [
                {
                    "pairs_key": f"{k}rcp",
                    "counts_key": f"{k}rcn",
                    "ttl": 100,
                    "user": "u2",
                    "window_start": "0",
                    "window_end": "10000",
                    "products": ["p1", "p2"],
                }
            ],
        },
        "dead_letters": [{"topic": "dlq", "key": "k1", "value": "{}", "reason": "schema"}],
        "alerts_kept": 10,
        "alerts_topic": "alerts",
    }
    fired = await redis.eval(APPLY_LUA, 2, f"{k}alerts", f"{k}outbox", pack(document))
    assert fired == [b"order_velocity"]
    assert await redis.hgetall(f"{k}h") == {b"a": b"6", b"b": b"2"}
    assert await redis.zrange(f"{k}z", 0, -1, withscores=True) == [(b"p2", 1.0), (b"p1", 3.0)]
    assert await redis.pfcount(f"{k}u") == 2
    assert await redis.smembers(f"{k}seen") == {b"e1", b"e2"}
    assert await redis.hgetall(f"{k}s") == {b"u1": b"[]", b"u2": b'[["p", 1]]'}
    assert await redis.get(f"{k}cp:0") == b"10:1000"
    assert await redis.get(f"{k}newest") == b"1000"
    assert await redis.hgetall(f"{k}rcp") == {b"u2|p1": b"1", b"u2|p2": b"1"}
    assert await redis.hget(f"{k}rcn", "u2") == b"2"  # below its threshold: no alert
    [alert] = [orjson.loads(a) for a in await redis.lrange(f"{k}alerts", 0, -1)]
    assert alert == {
        "alert_id": "order_velocity:u1:0",
        "rule": "order_velocity",
        "user_id": "u1",
        "window_start": 0,
        "window_end": 60000,
        "threshold": 2,
        "count": 3,
    }
    outbox = [fields for _, fields in await redis.xrange(f"{k}outbox")]
    assert [(f[b"t"], f[b"r"]) for f in outbox] == [(b"alerts", b"order_velocity"), (b"dlq", b"schema")]
    for key in ("h", "z", "u", "seen", "s", "ro", "rcp", "rcn"):
        assert 0 < await redis.ttl(f"{k}{key}") <= 100, key
