"""Password hashing: argon2 in a worker thread, so a sign-in never stalls the other requests."""

from __future__ import annotations

import asyncio

import pytest

from blog.passwords import Passwords


@pytest.mark.parametrize("on_loop", [False, True])
async def test_hash_then_verify(on_loop: bool) -> None:
    passwords = Passwords(time_cost=1, memory_kib=1024, parallelism=1, on_loop=on_loop)
    stored = await passwords.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert await passwords.verify(stored, "correct horse")
    assert not await passwords.verify(stored, "wrong horse")
    assert not await passwords.verify(None, "correct horse")  # unknown user: same work, says no


async def test_hashing_leaves_the_loop_free() -> None:
    passwords = Passwords(time_cost=3, memory_kib=64 * 1024, parallelism=1)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await passwords.hash("correct horse")  # tens of milliseconds of CPU
    finally:
        ticker.cancel()
    assert ticks >= 5, f"the loop ran only {ticks} times while a hash was computed"
