"""Tokens that already verified, remembered until their ``exp``: a signed-in request skips HS256.

Verifying a JWT costs ~90 µs (base64, JSON, HMAC, claims); a front-end sends the same token on every
read. :class:`TokenMemo` maps *(secret, the token's exact text)* to what verifying it gave. Only a
verification that succeeded is stored, so a forged or tampered token (another text) always goes
through the full check; the secret is part of the key, so a rotated secret verifies afresh. An entry
never outlives the token's ``exp`` (the memo's clock is the wall clock that ``exp`` is written in),
and the memo holds at most ``max_tokens`` entries, least recently used dropped first
(``cachetools.TLRUCache``). What the memo does not cover stays per request: the revocation check
(``ver`` against the published version, :mod:`asynccore.revocation`) runs after it, every time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

from cachetools import TLRUCache

__all__ = ["DEFAULT_MAX_TOKENS", "TokenMemo"]

V = TypeVar("V")
Key = tuple[str, str]  # (secret, token)

# ~1 KB an entry (the token's text, the caller, the cache's bookkeeping): about 10 MB at most.
DEFAULT_MAX_TOKENS = 10_000


def _until_exp(_key: Key, value: tuple[object, float], _now: float) -> float:
    return value[1]


class TokenMemo(Generic[V]):
    """What verifying ``token`` with ``secret`` gave, while the token is valid; bounded in entries."""

    def __init__(self, max_tokens: int = DEFAULT_MAX_TOKENS, clock: Callable[[], float] = time.time) -> None:
        self._entries: TLRUCache[Key, tuple[V, float]] = TLRUCache(max_tokens, ttu=_until_exp, timer=clock)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, secret: str, token: str) -> V | None:
        """The remembered result, or ``None`` (never verified, expired, evicted, or another secret)."""
        try:  # one lookup: the cache's own ``get`` asks ``in`` first, then looks up again
            return self._entries[(secret, token)][0]
        except KeyError:  # never stored, evicted, or expired (TLRUCache raises for those too)
            return None

    def put(self, secret: str, token: str, verified: V, exp: float) -> None:
        """Remember a *successful* verification until ``exp`` (seconds since the epoch, the claim)."""
        self._entries[(secret, token)] = (verified, exp)

    def clear(self) -> None:
        self._entries.clear()
