"""Aggregates in Redis, written exactly once: a batch's deltas and the offsets they cover commit in
one MULTI/EXEC, fenced by WATCH on those offsets.

A flush is: ``WATCH`` the batch's offset keys → one read script (stored offsets, which candidate ids
were already counted, the users' sessions) → compare the offsets with what this consumer last wrote
→ build the deltas in memory → ``MULTI`` + one apply script (every delta and the new offsets) →
``EXEC``. A crash before EXEC leaves Redis as it was, and the restarted consumer seeks to the stored
offsets, so nothing is lost or counted twice. If another consumer moved an offset in between (a
rebalance while this one was still flushing), the offsets differ or EXEC aborts: :class:`Fenced`,
and the batch is dropped and re-read from the stored offsets.

The deltas travel as one msgpack document decoded inside Redis by Lua: one command for a whole batch,
instead of paying redis-py's per-command cost for tens of thousands of increments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import WatchError

from stream.keys import Keys

__all__ = ["Fenced", "Ops", "Reply", "flush", "load_offsets", "lua_bytes", "move_offsets"]

# KEYS: offset keys. ARGV[1]: msgpack {s = {{set key, id, ...}, ...}, r = {{hash key, user, ...}, ...}}.
# Returns msgpack {o = {stored offset or false, ...}, s = {"0110…" per set},
#                  r = {{session or false, ...} per hash}}.
READ_LUA = """
local d = cmsgpack.unpack(ARGV[1])
local out = {o = {}, s = {}, r = {}}
for i, k in ipairs(KEYS) do out.o[i] = redis.call('GET', k) end
for i, e in ipairs(d.s) do
  local flags, n, j = {}, #e, 2
  while j <= n do
    local k = math.min(j + 999, n)
    for _, f in ipairs(redis.call('SMISMEMBER', e[1], unpack(e, j, k))) do flags[#flags + 1] = f end
    j = k + 1
  end
  out.s[i] = table.concat(flags)
end
for i, e in ipairs(d.r) do
  local values, n, j = {}, #e, 2
  while j <= n do
    local k = math.min(j + 999, n)
    for _, v in ipairs(redis.call('HMGET', e[1], unpack(e, j, k))) do values[#values + 1] = v end
    j = k + 1
  end
  out.r[i] = values
end
return cmsgpack.pack(out)
"""

# KEYS: alerts list, outbox stream. ARGV: msgpack ops (see Ops), alerts kept, alerts topic.
# Returns the rules of the alerts that fired.
APPLY_LUA = """
local d = cmsgpack.unpack(ARGV[1])
local alerts, outbox = KEYS[1], KEYS[2]
local kept, alerts_topic = tonumber(ARGV[2]) - 1, ARGV[3]
local call, fired, expiring = redis.call, {}, {}
local function chunked(cmd, key, e, from)
  local n, i = #e, from
  while i <= n do
    local j = math.min(i + 999, n)
    call(cmd, key, unpack(e, i, j))
    i = j + 1
  end
end
local function expire(key, ttl)  -- once per key and batch
  if not expiring[key] then call('EXPIRE', key, ttl) expiring[key] = true end
end
local function fire(rule, user, start, stop, threshold, count)  -- the alert JSON (see stream.risk)
  local alert = '{"alert_id":' .. cjson.encode(rule .. ':' .. user .. ':' .. start) .. ',"rule":"' .. rule
    .. '","user_id":' .. cjson.encode(user) .. ',"window_start":' .. start .. ',"window_end":' .. stop
    .. ',"threshold":' .. threshold .. ',"count":' .. count .. '}'
  call('LPUSH', alerts, alert)
  call('LTRIM', alerts, 0, kept)
  call('XADD', outbox, '*', 't', alerts_topic, 'k', user, 'v', alert, 'r', rule)
  fired[#fired + 1] = rule
end
-- Increments as one read and one write per key (and 999 members), not one call per member: for
-- every (key, member) of e[3], e[5], … add e[4], e[6], ….
local function increment(key, e, read, write, value_first)
  local n, i = #e, 3
  while i <= n do
    local j = math.min(i + 1997, n)
    local names = {}
    for k = i, j, 2 do names[#names + 1] = e[k] end
    local now, args = call(read, key, unpack(names)), {}
    for k = 1, #names do
      local v = (tonumber(now[k]) or 0) + e[i + 2 * k - 1]
      local a, b = names[k], v
      if value_first then a, b = v, names[k] end  -- ZADD takes the score first
      args[2 * k - 1], args[2 * k] = a, b
    end
    call(write, key, unpack(args))
    i = j + 1
  end
  call('EXPIRE', key, e[2])
end
for _, e in ipairs(d.h) do increment(e[1], e, 'HMGET', 'HSET', false) end
for _, e in ipairs(d.z) do increment(e[1], e, 'ZMSCORE', 'ZADD', true) end
for _, e in ipairs(d.pf) do chunked('PFADD', e[1], e, 3) call('EXPIRE', e[1], e[2]) end
for _, e in ipairs(d.sa) do chunked('SADD', e[1], e, 2) call('EXPIRE', e[1], d.sa_ttl) end
for _, e in ipairs(d.hs) do
  local n, i = #e, 3
  while i <= n do
    local j = math.min(i + 999, n)
    call('HSET', e[1], unpack(e, i, j))
    i = j + 1
  end
  call('EXPIRE', e[1], e[2])
end
for i = 1, #d.set, 2 do call('SET', d.set[i], d.set[i + 1]) end
if d.newest > tonumber(call('GET', d.newest_key) or '0') then call('SET', d.newest_key, d.newest) end
local ro = d.ro  -- rule, window start, end, threshold, then key, ttl, user, delta per counter
for _, e in ipairs(ro.c) do
  local v = call('HINCRBY', e[1], e[3], e[4])
  expire(e[1], e[2])
  if v - e[4] <= ro.t and v > ro.t then fire(ro.r, e[3], e[5], e[6], ro.t, v) end
end
local rc = d.rc  -- rule, threshold, then pairs key, counts key, ttl, user, start, end, product... per user
for _, e in ipairs(rc.c) do
  local added = 0
  for i = 7, #e do added = added + call('HSETNX', e[1], e[4] .. '|' .. e[i], 1) end
  expire(e[1], e[3])
  if added > 0 then
    local v = call('HINCRBY', e[2], e[4], added)
    expire(e[2], e[3])
    if v - added <= rc.t and v > rc.t then fire(rc.r, e[4], e[5], e[6], rc.t, v) end
  end
end
for _, e in ipairs(d.ob) do
  call('XADD', outbox, '*', 't', e[1], 'k', e[2], 'v', e[3], 'r', e[4])
end
return fired
"""

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.decode


def lua_bytes(data: bytes) -> msgspec.Raw:
    """Arbitrary bytes as a msgpack *str*: Redis's Lua msgpack decoder rejects the bin type."""
    n = len(data)
    if n < 32:
        head = bytes([0xA0 | n])
    elif n < 256:
        head = bytes([0xD9, n])
    elif n < 65536:
        head = b"\xda" + n.to_bytes(2, "big")
    else:
        head = b"\xdb" + n.to_bytes(4, "big")
    return msgspec.Raw(head + data)


@dataclass(slots=True)
class Ops:
    """One batch's writes, as the apply script reads them (each list entry is one key's worth)."""

    h: list[list[Any]] = field(default_factory=list)  # [key, ttl, field, n, field, n, …] hash increments
    z: list[list[Any]] = field(default_factory=list)  # [key, ttl, member, n, …] sorted-set increments
    pf: list[list[Any]] = field(default_factory=list)  # [key, ttl, member, …] PFADD
    sa: list[list[Any]] = field(default_factory=list)  # [key, member, …] SADD …
    sa_ttl: int = 0  # … and their expiry
    hs: list[list[Any]] = field(default_factory=list)  # [key, ttl, field, value, …] HSET
    set: list[Any] = field(default_factory=list)  # [key, value, …] SET (offsets)
    newest: int = 0
    newest_key: str = ""
    ro: dict[str, Any] = field(default_factory=lambda: {"c": []})  # risk counters, see APPLY_LUA
    rc: dict[str, Any] = field(default_factory=lambda: {"c": []})  # risk distinct-set counters
    ob: list[list[Any]] = field(default_factory=list)  # [topic, key, value, reason] to produce

    def encode(self) -> bytes:
        return _encode({f.name: getattr(self, f.name) for f in fields(self)})


@dataclass(slots=True)
class Reply:
    """What the read script found: per dedup group, which ids were already counted; sessions by user."""

    seen: list[str]
    sessions: dict[str, str | None]


class Fenced(Exception):
    """Another consumer moved one of this batch's offsets: the batch must not be applied."""


async def load_offsets(redis: Redis, keys: Keys, topic: str, partitions: list[int]) -> dict[int, str | None]:
    """The stored progress of each partition (``None``: never processed)."""
    if not partitions:
        return {}
    values: list[Any] = await redis.mget([keys.offset(topic, p) for p in partitions])
    return {p: v.decode() if v else None for p, v in zip(partitions, values, strict=True)}


async def move_offsets(
    redis: Redis, keys: Keys, topic: str, moves: dict[int, tuple[str | None, str]]
) -> None:
    """Rewrite stored offsets, ``{partition: (expected, new)}``, fenced like a flush.

    An offset reset (the stored offset is outside the partition's log) moves the stored progress
    itself: the next flush then starts from the new offset, and a crash before it resets no further.
    :class:`Fenced` if another consumer moved one of them since it was read.
    """
    if not moves:
        return
    partitions = list(moves)
    offset_keys = [keys.offset(topic, p) for p in partitions]
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(*offset_keys)
        stored: list[Any] = await pipe.mget(offset_keys)
        for partition, value in zip(partitions, stored, strict=True):
            if (value.decode() if value else None) != moves[partition][0]:
                raise Fenced(f"partition {partition} was processed by another consumer")
        pipe.multi()  # type: ignore[no-untyped-call]
        for key, partition in zip(offset_keys, partitions, strict=True):
            pipe.set(key, moves[partition][1])
        try:
            await pipe.execute()
        except WatchError:
            raise Fenced("an offset moved during its reset") from None


async def flush(
    redis: Redis,
    keys: Keys,
    topic: str,
    expected: dict[int, str | None],
    seen_groups: list[list[str | int]],
    session_groups: list[list[str]],
    build: Callable[[Reply], Ops],
    *,
    alerts_kept: int,
    alerts_topic: str,
) -> list[str]:
    """Apply one batch exactly once (see the module docstring); returns the rules of alerts fired.

    ``expected`` is the stored value of each offset key this consumer last read or wrote;
    ``seen_groups`` is ``[[seen key, id, …], …]``; ``session_groups`` is ``[[sessions key, user, …],
    …]``, newest bucket first; ``build`` turns the reply into the batch's ops.
    """
    if not expected:
        raise ValueError("a flush covers at least one partition")
    partitions = list(expected)
    offset_keys = [keys.offset(topic, p) for p in partitions]
    request = _encode({"s": seen_groups, "r": session_groups})
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(*offset_keys)
        found = _decode(await pipe.eval(READ_LUA, len(offset_keys), *offset_keys, request))
        stored = found["o"] or []
        for partition, value in zip(partitions, stored, strict=True):
            if (value or None) != expected[partition]:
                raise Fenced(f"partition {partition} was processed by another consumer")
        sessions: dict[str, str | None] = {}
        for group, values in zip(session_groups, found["r"] or [], strict=True):
            for user, value in zip(group[1:], values or [], strict=True):
                if value and not sessions.get(user):
                    sessions[user] = value
        ops = build(Reply(found["s"] or [], sessions))
        pipe.multi()  # type: ignore[no-untyped-call]
        pipe.eval(APPLY_LUA, 2, keys.alerts, keys.outbox, ops.encode(), alerts_kept, alerts_topic)
        try:
            (fired,) = await pipe.execute()
        except WatchError:
            raise Fenced("an offset moved during the flush") from None
    return [r.decode() if isinstance(r, bytes) else str(r) for r in fired or []]
