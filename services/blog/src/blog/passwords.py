"""Argon2id password hashing, off the event loop and bounded.

A hash costs tens of milliseconds of CPU and memory on purpose, so it runs in a worker thread (the loop
keeps serving) behind a bulkhead: a login flood queues a bounded number of hashes and sheds the rest
with 503 instead of piling up threads and memory.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from asynccore.limits import Bulkhead

__all__ = ["Passwords"]


class Passwords:
    def __init__(
        self,
        *,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        concurrency: int = 2,
        max_waiting: int = 64,
        on_loop: bool = False,
    ) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)
        self._bulkhead = Bulkhead("blog-password-hash", limit=concurrency, max_waiting=max_waiting)
        self._on_loop = on_loop  # only to measure the cost of blocking the loop (BLOG_HASH_ON_LOOP)
        # Checked when the email is unknown, so "no such user" takes as long as "wrong password".
        self._decoy = self._hasher.hash("decoy password")

    async def hash(self, password: str) -> str:
        async with self._bulkhead:
            if self._on_loop:
                return self._hasher.hash(password)
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with ``password_hash=None`` it spends the same time and says no."""
        async with self._bulkhead:
            if self._on_loop:
                return self._verify(password_hash, password)
            return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._decoy, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False
