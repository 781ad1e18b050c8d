"""A signed-in reader's own flags — the slugs they favourited, the usernames they follow — cached per reader.

Every signed-in read lays these over the shared bytes (:mod:`blog.overlay`). Asking SQLite for them
per request costs a hop to a reader thread (milliseconds queued under load for microseconds of work);
instead they are one cache entry per reader (family ``viewer_flags``, key the user id), so a hit is a
lookup in process memory like any cached article. The entry depends on:

* ``f:<id>`` — bumped by that reader's favourite, unfavourite, follow and unfollow, after the commit:
  the writing replica reads its own write at once, the others once Redis's push arrives (as for every
  cached answer, see the README);
* ``users`` and ``slugs`` — the entry holds *names*: a username changes only with ``users`` bumped, a
  slug stops naming its article (renamed, deleted; a new article may take it) only with ``slugs``.

A reader with more than :data:`MAX_NAMES` of either kind is not held as a set (the entry says so):
their flags are asked per page, as before. With Redis out of reach the cache loads from SQLite on
every read (its fallback), so the flags are as current as the database.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from cachetools import LRUCache

from blog.cache import Cache
from blog.db import Database, fetch_all
from blog.users import USERS_VERSION

__all__ = ["FAMILY", "MAX_NAMES", "NO_FLAGS", "SLUGS_VERSION", "Flags", "flags_of", "flags_version", "parsed"]

FAMILY = "viewer_flags"
SLUGS_VERSION = "slugs"
# Per kind. A set this size is ~30 KB in the cache and is parsed per read (~50 µs); past it the
# per-page query is cheaper than parsing, and nobody's entry can grow without bound.
MAX_NAMES = 1000
_TOO_MANY = b"null"


@dataclass(frozen=True, slots=True)
class Flags:
    favorited: frozenset[str]  # slugs
    following: frozenset[str]  # usernames


NO_FLAGS = Flags(frozenset(), frozenset())
_NONE = orjson.dumps({"favorited": [], "following": []})  # as _load writes it


def flags_version(user_id: int) -> str:
    """The version ``user_id``'s own favourites and follows bump (a per-row version: writes create it)."""
    return f"f:{user_id}"


def _deps(user_id: int) -> tuple[str, ...]:
    return (flags_version(user_id), USERS_VERSION, SLUGS_VERSION)


async def _load(db: Database, user_id: int, max_names: int) -> bytes:
    async with db.read() as conn:
        favorited = await fetch_all(
            conn,
            "viewer_favorites",
            "SELECT a.slug FROM favorites f JOIN articles a ON a.id = f.article_id"
            " WHERE f.user_id = ? LIMIT ?",
            (user_id, max_names + 1),
        )
        following = await fetch_all(
            conn,
            "viewer_follows",
            "SELECT u.username FROM follows fo JOIN users u ON u.id = fo.followee_id"
            " WHERE fo.follower_id = ? LIMIT ?",
            (user_id, max_names + 1),
        )
    if len(favorited) > max_names or len(following) > max_names:
        return _TOO_MANY
    return orjson.dumps(
        {"favorited": [row["slug"] for row in favorited], "following": [row["username"] for row in following]}
    )


async def flags_of(db: Database, cache: Cache, user_id: int) -> Flags | None:
    """``user_id``'s flags, from the cache; ``None`` if they hold too many to keep as a set."""
    max_names = MAX_NAMES
    key = str(user_id)
    entry = cache.peek(FAMILY, key) or await cache.get(
        FAMILY, key, _deps(user_id), lambda: _load(db, user_id, max_names)
    )
    if entry.body == _TOO_MANY:
        return None
    if entry.body == _NONE:  # most readers: nothing to parse
        return NO_FLAGS
    return parsed(entry.body)


def _cost(held: tuple[Flags, int]) -> int:
    return held[1]


# Parsed flags, remembered by the entry's bytes (the cache hands out one bytes object per entry, so a
# hit hashes nothing new) and bounded by what they hold: not kept beside the entry, whose budget in
# the in-process tier counts its bytes only. Parsing per read was ~3 % of a signed-in list read.
PARSED_MAX_BYTES = 4 * 1024 * 1024
_PARSED: LRUCache[bytes, tuple[Flags, int]] = LRUCache(PARSED_MAX_BYTES, getsizeof=_cost)


def parsed(body: bytes) -> Flags:
    """The flags an entry's bytes hold (``{"favorited": [...], "following": [...]}``)."""
    try:
        return _PARSED[body][0]
    except KeyError:
        held = orjson.loads(body)
    flags = Flags(frozenset(held["favorited"]), frozenset(held["following"]))
    # The sets and their names, about what sys.getsizeof would say, plus the bytes of the key.
    cost = 3 * len(body) + 500
    if cost <= PARSED_MAX_BYTES:
        _PARSED[body] = (flags, cost)
    return flags
