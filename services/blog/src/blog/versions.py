"""Version tokens: one write makes every dependent cache entry stale in O(1), on every replica.

A version (``articles``, ``users``, ``a:<slug>``, ``epoch`` …) is a random token in Redis under
``<prefix>:v:<name>``; cache keys embed the tokens they were built from, so replacing a token orphans
every entry built from it. Random, never counters: a version lost to a flush or an eviction comes
back as a new token, so an old entry never revives. Each process keeps a local copy that Redis's own
push drops (``CLIENT TRACKING``, see :meth:`Versions.listen`); :attr:`Versions.generation` moves
whenever that copy changes. A copy that cannot be trusted (channel down or just back, a bump Redis
did not take) is not used until an ``epoch`` bump lands, which makes everything cached before stale.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, Connection, parse_url

from asynccore.resilience import CircuitBreaker, retrying
from asynccore.tasks import check_cancelled
from blog.singleflight import UNAVAILABLE, SingleFlight

__all__ = ["EPOCH", "UNAVAILABLE", "Versions", "is_row_version", "new_token"]

log = logging.getLogger("blog.cache")

EPOCH = "epoch"
INVALIDATE_CHANNEL = "__redis__:invalidate"
# The channel is probed with PING after this much silence; no answer within the socket timeout = dead.
PROBE_AFTER_S = 1.0
# A version nobody bumped for this long expires: its entries miss once, nothing stale can come back
# (tokens are random), and the versions of deleted articles do not pile up in Redis.
VERSION_TTL_S = 24 * 3600
# The local copy is a cache too: past this many names it starts over.
MAX_LOCAL_VERSIONS = 100_000


def is_row_version(name: str) -> bool:
    """Whether ``name`` is the version of one row (``a:<slug>``, ``u:<id>``) rather than of a family.

    A row's version is created by writes only. A read that finds it missing cannot tell "nobody wrote
    this row for a day" from "there is no such row", and creating it then would let anyone store a key
    per name they make up (a 404 must leave nothing behind): the cache loads such a read without
    storing it, and creates the version only once the load showed the row exists.
    """
    return ":" in name


def new_token() -> str:
    return secrets.token_hex(6)


class Versions:
    def __init__(
        self, redis: Redis, url: str, prefix: str, breaker: CircuitBreaker, *, timeout_s: float = 1.0
    ) -> None:
        self._redis = redis
        self._url = url  # the invalidation channel is a connection of its own, outside the pool
        self._timeout_s = timeout_s
        self._key_prefix = f"{prefix}:v:"
        self._breaker = breaker
        self._local: dict[str, str] = {}
        # Local copy usable: the invalidation channel is subscribed and the epoch was bumped since.
        self._trusted = False
        # A bump Redis did not take: until an epoch bump lands, neither the local copy nor anything
        # cached is trusted.
        self._missed_bump = False
        # Bumped by every invalidation (and whenever the local copy is dropped or a token in it
        # changes): a fetch that raced one must not store what it read, and a cache entry found
        # current at one generation stays current until the next (see ``Cache.peek``).
        self.generation = 0
        self.fetches: SingleFlight[tuple[str, ...] | None] = SingleFlight()
        self.connected = asyncio.Event()  # set while the invalidation channel is up (tests wait on it)

    def key(self, name: str) -> str:
        return self._key_prefix + name

    def local(self, names: tuple[str, ...]) -> tuple[str, ...] | None:
        """The tokens of ``names`` from the local copy, without I/O; ``None`` unless all are known."""
        if not self._trusted or self._missed_bump:
            return None
        local = self._local
        try:
            return tuple([local[name] for name in names])
        except KeyError:
            return None

    async def current(self, names: tuple[str, ...], *, create_rows: bool = False) -> tuple[str, ...] | None:
        """The tokens of ``names``: local when known, else from Redis, creating missing ones — but a
        missing row version (:func:`is_row_version`) only with ``create_rows``: without, ``None``.

        Concurrent callers share one fetch, keyed by the local generation too: a caller that comes
        after a write (which moved the generation) never joins a fetch that started before it. After a
        missed bump, the epoch is bumped first. Raises one of ``UNAVAILABLE`` when Redis fails.
        """
        tokens = self.local(names)
        if tokens is not None:
            return tokens
        if self._missed_bump:
            await self.bump([EPOCH])
            self._missed_bump = False
        key = (names, self.generation, create_rows)
        return await self.fetches.run(key, lambda: self._fetch_and_keep(names, create_rows))

    async def _fetch_and_keep(self, names: tuple[str, ...], create_rows: bool) -> tuple[str, ...] | None:
        generation = self.generation
        fetched = await self._fetch(names, create_rows)
        if fetched is None:
            return None
        if self._trusted and generation == self.generation:
            local = self._local
            if len(local) > MAX_LOCAL_VERSIONS:
                local.clear()
                self.generation += 1
            for name, token in zip(names, fetched, strict=True):
                if local.setdefault(name, token) != token:
                    # Redis moved on before its invalidation reached us: take its word, and stop
                    # anything checked against the old token from being served unchecked.
                    local[name] = token
                    self.generation += 1
        return fetched

    async def _fetch(self, names: tuple[str, ...], create_rows: bool) -> tuple[str, ...] | None:
        keys = [self.key(name) for name in names]
        async with self._breaker:
            values: list[Any] = await self._redis.mget(keys)
            missing = [key for key, value in zip(keys, values, strict=True) if value is None]
            if not create_rows and any(
                value is None and is_row_version(name) for name, value in zip(names, values, strict=True)
            ):
                return None
            if missing:
                # Concurrent creators race with SET NX; everyone reads back the winner's token.
                async with self._redis.pipeline(transaction=True) as pipe:
                    for key in missing:
                        pipe.set(key, new_token(), nx=True, ex=VERSION_TTL_S)
                        pipe.get(key)
                    created = iter((await pipe.execute())[1::2])
                values = [value if value is not None else next(created) for value in values]
        # GET after SET NX in one MULTI cannot be nil; were it, a fresh token would only mean a miss.
        return tuple(value.decode() if value is not None else new_token() for value in values)

    async def invalidate(self, names: Iterable[str]) -> None:
        """Give ``names`` new tokens; if Redis cannot take them, trust nothing until an epoch bump lands.

        Other replicas catch up when their channel reconnects (they bump the epoch then).
        """
        try:
            await self.bump(names)
        except UNAVAILABLE as exc:
            self._missed_bump = True
            log.warning("could not invalidate %s in redis (%s); cache bypassed until it can", names, exc)

    async def bump(self, names: Iterable[str]) -> None:
        """Give ``names`` new tokens; raises when Redis could not be told."""
        keys = [self.key(name) for name in names]
        try:
            async with self._breaker, self._redis.pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.set(key, new_token(), ex=VERSION_TTL_S)
                await pipe.execute()
        finally:
            # Forget even on failure: the old tokens are not to be trusted any more either way.
            self.generation += 1
            for key in keys:
                self._local.pop(key[len(self._key_prefix) :], None)

    def _forget(self, keys: list[bytes] | None) -> None:
        self.generation += 1
        if keys is None:  # FLUSHALL / FLUSHDB
            self._local.clear()
            return
        cut = len(self._key_prefix)
        for key in keys:
            self._local.pop(key.decode()[cut:], None)

    def _distrust(self) -> None:
        self._trusted = False
        self.generation += 1
        self._local.clear()
        self.connected.clear()

    async def listen(self) -> None:
        """Keep the invalidation channel open until cancelled (the cache owns this task).

        A connection of its own enables ``CLIENT TRACKING`` in broadcast mode for the version prefix
        and subscribes to ``__redis__:invalidate``. Redis queues the invalidation for every replica
        *before* it answers the write, so by the time a writer's response leaves, the other replicas'
        copies are being dropped. After any reconnect the replica cannot know what it missed: it drops
        its copy and bumps ``epoch``.

        Every attempt and every read checks for a cancel redis-py lost (see ``check_cancelled``):
        without that, a cancel landing as a command is sent leaves the channel running, and the
        cache's owner waiting for it.
        """
        async for attempt in retrying(
            attempts=sys.maxsize,
            initial_s=0.05,
            max_s=1.0,
            retry_on=UNAVAILABLE,
            name="blog-cache-invalidations",
        ):
            with attempt:
                check_cancelled()
                try:
                    await self._listen_once()
                except Exception as exc:
                    if self._trusted:
                        log.warning("cache invalidation channel lost (%s); reading versions from Redis", exc)
                    raise
                finally:
                    self._distrust()

    async def _listen_once(self) -> None:
        kwargs: dict[str, Any] = dict(parse_url(self._url))
        connection_class = kwargs.pop("connection_class", Connection)
        # RESP2 on purpose: invalidations then arrive as plain pub/sub messages on this connection
        # (REDIRECT to itself), not as RESP3 pushes that the client library would route elsewhere.
        conn: AbstractConnection = connection_class(
            **kwargs, protocol=2, socket_timeout=self._timeout_s, socket_connect_timeout=self._timeout_s
        )
        try:
            # redis-py leaves Connection.connect unannotated; it returns None.
            await conn.connect()  # type: ignore[no-untyped-call]
            await conn.send_command("CLIENT", "ID")
            client_id = await conn.read_response()
            await conn.send_command(
                "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", "PREFIX", self._key_prefix
            )
            await conn.read_response()
            await conn.send_command("SUBSCRIBE", INVALIDATE_CHANNEL)
            await conn.read_response()
            # Whatever changed while we were not listening is unknown: start from nothing, and make
            # every entry cached before now stale for everyone.
            self._forget(None)
            await self.bump([EPOCH])
            self._trusted = True
            self.connected.set()
            log.info("cache invalidation channel connected")
            await self._read_invalidations(conn)
        finally:
            await conn.disconnect()

    async def _read_invalidations(self, conn: AbstractConnection) -> None:
        probing = False
        while True:
            check_cancelled()
            message = await conn.read_response(timeout=PROBE_AFTER_S)
            if message is None:
                if probing:
                    raise TimeoutError("invalidation channel did not answer PING")
                await conn.send_command("PING")
                probing = True
                continue
            probing = False
            if isinstance(message, list) and len(message) == 3 and message[0] == b"message":
                self._forget(message[2])
