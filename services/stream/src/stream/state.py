"""The state store: aggregates and the checkpoints they cover in Redis, written exactly once.

A flush is one transaction fenced by ``WATCH`` on the batch's checkpoint keys (the steps are in
``Consumer._commit``): :meth:`Transaction.read` runs ``lua/read.lua`` (stored checkpoints, which
candidate ids were already counted, the users' sessions) and raises :class:`Fenced` if a checkpoint
is not what this consumer last read or wrote; :meth:`Transaction.apply` runs ``lua/apply.lua`` with
the write set it is given (every delta and the new checkpoints) inside ``MULTI``/``EXEC``. A crash
before ``EXEC`` leaves Redis as it was and the restarted consumer resumes from the stored
checkpoints, so nothing is lost or counted twice; if another consumer moved a checkpoint in between
(a rebalance while this one was still flushing), ``EXEC`` aborts: :class:`Fenced`, and the batch is
re-read from the stored checkpoints.

The write set travels as one msgpack map with named fields, decoded inside Redis by Lua: one command
for a whole batch instead of paying redis-py's per-command cost for tens of thousands of increments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import fields
from importlib.resources import files
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from stream.keys import Keys
from stream.writes import Found, Plan, WriteSet

__all__ = [
    "APPLY_LUA",
    "READ_LUA",
    "Fenced",
    "Transaction",
    "load_checkpoints",
    "move_checkpoints",
    "transaction",
]

# Read once at start-up (import); EVAL sends the text, which Redis compiles once and caches by SHA.
READ_LUA = files("stream").joinpath("lua/read.lua").read_text(encoding="utf-8")
APPLY_LUA = files("stream").joinpath("lua/apply.lua").read_text(encoding="utf-8")

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.decode
_WRITE_FIELDS = [f.name for f in fields(WriteSet)]


class Fenced(Exception):
    """Another consumer moved one of this batch's checkpoints: the batch must not be applied."""


class Transaction:
    """One flush, under ``WATCH`` of its checkpoint keys: :meth:`read`, then :meth:`apply` once."""

    def __init__(
        self, pipe: Pipeline, keys: Keys, checkpoint_keys: list[str], expected: dict[int, str | None]
    ) -> None:
        self._pipe = pipe
        self._keys = keys
        self._checkpoint_keys = checkpoint_keys  # in the order of expected
        self._expected = expected

    async def read(self, the_plan: Plan) -> Found:
        """Check the checkpoints are this consumer's (else :class:`Fenced`) and read what the plan asks."""
        request = _encode({"seen": the_plan.seen, "sessions": the_plan.sessions})
        keys = self._checkpoint_keys
        found = _decode(await self._pipe.eval(READ_LUA, len(keys), *keys, request))
        for (partition, expected), value in zip(
            self._expected.items(), found["checkpoints"] or [], strict=True
        ):
            if (value or None) != expected:
                raise Fenced(f"partition {partition} was processed by another consumer")
        sessions: dict[str, str | None] = {}
        for group, values in zip(the_plan.sessions, found["sessions"] or [], strict=True):
            for user, value in zip(group.members, values or [], strict=True):
                if value and not sessions.get(user):  # groups are newest first
                    sessions[user] = value
        return Found(found["seen"] or [], sessions)

    async def apply(self, writes: WriteSet, *, alerts_kept: int, alerts_topic: str) -> list[str]:
        """Apply ``writes`` (its checkpoints included) in ``MULTI``/``EXEC``; the rules of alerts fired.

        :class:`Fenced` if a checkpoint key changed since :meth:`read` (``EXEC`` then writes nothing).
        """
        document = _encode(_apply_document(writes, alerts_kept, alerts_topic))
        pipe = self._pipe
        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves Pipeline.multi unannotated
        pipe.eval(APPLY_LUA, 2, self._keys.alerts, self._keys.outbox, document)
        try:
            (fired,) = await pipe.execute()
        except WatchError:
            raise Fenced("a checkpoint moved during the flush") from None
        return [r.decode() if isinstance(r, bytes) else str(r) for r in fired or []]


@asynccontextmanager
async def transaction(
    redis: Redis, keys: Keys, topic: str, expected: dict[int, str | None]
) -> AsyncIterator[Transaction]:
    """Open a flush of the partitions in ``expected`` (partition → its checkpoint key's value as this
    consumer last read or wrote it), watching their checkpoint keys."""
    if not expected:
        raise ValueError("a flush covers at least one partition")
    checkpoint_keys = [keys.checkpoint(topic, p) for p in expected]
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(*checkpoint_keys)
        yield Transaction(pipe, keys, checkpoint_keys, expected)


async def load_checkpoints(
    redis: Redis, keys: Keys, topic: str, partitions: list[int]
) -> dict[int, str | None]:
    """The stored checkpoint of each partition (``None``: never processed)."""
    if not partitions:
        return {}
    values: list[Any] = await redis.mget([keys.checkpoint(topic, p) for p in partitions])
    return {p: v.decode() if v else None for p, v in zip(partitions, values, strict=True)}


async def move_checkpoints(
    redis: Redis, keys: Keys, topic: str, moves: dict[int, tuple[str | None, str]]
) -> None:
    """Rewrite stored checkpoints, ``{partition: (expected, new)}``, fenced like a flush.

    An offset reset (the stored offset is outside the partition's log) moves the checkpoint itself:
    the next flush then starts from the new offset, and a crash before it resets no further.
    :class:`Fenced` if another consumer moved one of them since it was read.
    """
    if not moves:
        return
    partitions = list(moves)
    checkpoint_keys = [keys.checkpoint(topic, p) for p in partitions]
    async with redis.pipeline(transaction=True) as pipe:
        await pipe.watch(*checkpoint_keys)
        stored: list[Any] = await pipe.mget(checkpoint_keys)
        for partition, value in zip(partitions, stored, strict=True):
            if (value.decode() if value else None) != moves[partition][0]:
                raise Fenced(f"partition {partition} was processed by another consumer")
        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves Pipeline.multi unannotated
        for key, partition in zip(checkpoint_keys, partitions, strict=True):
            pipe.set(key, moves[partition][1])
        try:
            await pipe.execute()
        except WatchError:
            raise Fenced("a checkpoint moved during its reset") from None


def _apply_document(writes: WriteSet, alerts_kept: int, alerts_topic: str) -> dict[str, Any]:
    """The apply script's ARGV[1]: the write set's fields by name, and where alerts go."""
    document: dict[str, Any] = {name: getattr(writes, name) for name in _WRITE_FIELDS}
    document["dead_letters"] = [
        {"topic": m.topic, "key": _lua_str(m.key), "value": m.value, "reason": m.reason}
        for m in writes.dead_letters
    ]
    document["alerts_kept"], document["alerts_topic"] = alerts_kept, alerts_topic
    return document


def _lua_str(data: bytes) -> msgspec.Raw:
    """Arbitrary bytes (a Kafka key) as a msgpack *str*: Redis's Lua msgpack decoder rejects bin."""
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
