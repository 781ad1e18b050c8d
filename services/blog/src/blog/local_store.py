"""The in-process tier: ready-to-send entries of the hottest keys, bounded by what they really cost.

An :class:`Entry` is a body with what sending it needs (ETag, headers prepared per shape) and what the
cache checks it against (the version tokens it was built at, its expiry). :class:`LocalStore` keeps
entries within a byte budget counted by :func:`entry_cost` — body, key and the entry's own measured
overhead, not ``len(body)`` — and drops the oldest first. It knows nothing about versions or Redis.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ENTRY_OVERHEAD", "Entry", "LocalKey", "LocalStore", "entry_cost", "etag_of"]

LocalKey = tuple[str, str]  # (family, key)

# What an entry costs the process beyond its body's and its key's ``sys.getsizeof``: the Entry, its
# ETag string and tokens tuple, the ``(family, key)`` tuple, the headers a sender prepares for one shape
# (a dict and a CIMultiDict of a few headers), and the store's dict slot with its growth slack.
# Measured with tracemalloc on CPython 3.11 at ~1,070 bytes (165 to 10,000 entries); counted with a
# margin, so the tier's real memory stays under its budget (test_security.py holds it to that).
ENTRY_OVERHEAD = 1150


def etag_of(body: bytes) -> str:
    """A strong ETag from the bytes themselves: every replica computes the same one."""
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def entry_cost(key: str, body: bytes) -> int:
    """Bytes an entry really holds in the store (the budget counts these, not ``len(body)``)."""
    return sys.getsizeof(body) + sys.getsizeof(key) + ENTRY_OVERHEAD


@dataclass(slots=True, eq=False)
class Entry:
    body: bytes
    etag: str
    tokens: tuple[str, ...]  # the version tokens it was built at (empty: not cached)
    expires_at: float  # time.monotonic()
    # The versions generation at which ``tokens`` were last found current (-1: not yet): while the
    # generation has not moved, nothing the entry depends on was invalidated (see ``Cache.peek``).
    checked: int = -1
    # What a sender derives from the entry once and reuses on every hit (response headers per shape).
    prepared: dict[object, Any] = field(default_factory=dict)
    size: int = 0  # what it costs while the store holds it (see ``entry_cost``)


class LocalStore:
    """Entries by ``(family, key)``, at most ``max_bytes`` of them by :func:`entry_cost`."""

    def __init__(self, max_bytes: int) -> None:
        # Read directly by ``Cache.peek``: the hottest path in the blog is one lookup in this dict.
        self.entries: dict[LocalKey, Entry] = {}
        self.bytes = 0
        self.max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: LocalKey) -> Entry | None:
        return self.entries.get(key)

    def put(self, key: LocalKey, entry: Entry) -> Entry:
        """Keep ``entry`` under ``key`` (unless it alone exceeds the budget), dropping the oldest."""
        entry.size = entry_cost(key[1], entry.body)
        if entry.size > self.max_bytes:
            return entry
        entries = self.entries
        old = entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        entries[key] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            # Oldest first: dicts keep insertion order, and a refreshed entry is re-inserted at the end.
            self.bytes -= entries.pop(next(iter(entries))).size
        return entry

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0
