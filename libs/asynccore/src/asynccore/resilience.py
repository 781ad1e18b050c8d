"""Retries with backoff and a circuit breaker, for dependencies that fail now and then.

Retries absorb short blips; exponential backoff with jitter keeps a fleet of clients from retrying in
lock-step and hammering a dependency that is trying to recover. When a dependency is down for longer,
the circuit breaker stops calling it at all for a while: callers fail in microseconds instead of
waiting for a timeout each, and the dependency gets room to come back.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Literal, ParamSpec, TypeVar

from prometheus_client import Counter, Gauge
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from asynccore.errors import ApiError

__all__ = ["CircuitBreaker", "CircuitOpen", "State", "retrying"]

P = ParamSpec("P")
T = TypeVar("T")
ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]

RETRIES = Counter("retry_attempts_total", "Attempts made again after a failure", ["name"])
BREAKER_STATE = Gauge("circuit_breaker_state", "0 closed, 1 open, 2 half-open", ["name"])
BREAKER_OPENS = Counter("circuit_breaker_opens_total", "Times a circuit breaker opened", ["name"])


def retrying(
    *,
    attempts: int = 5,
    initial_s: float = 0.05,
    max_s: float = 2.0,
    retry_on: ExceptionTypes = Exception,
    name: str = "default",
) -> AsyncRetrying:
    """A tenacity retryer: up to ``attempts`` tries, waits ``initial_s·2ⁿ`` plus jitter, capped at ``max_s``.

    After the last attempt the original exception is re-raised (not tenacity's ``RetryError``), so
    callers handle the same exceptions with or without retries. Each retry counts in
    ``retry_attempts_total{name}``. Use as::

        async for attempt in retrying(name="payment", retry_on=aiohttp.ClientError):
            with attempt:
                await pay(...)
    """
    retries = RETRIES.labels(name)

    def count(_: RetryCallState) -> None:
        retries.inc()

    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s),
        retry=retry_if_exception_type(retry_on),
        before_sleep=count,
        reraise=True,
    )


State = Literal["closed", "open", "half_open"]
_STATE_VALUE: dict[State, int] = {"closed": 0, "open": 1, "half_open": 2}


class CircuitOpen(ApiError):
    """The breaker refuses the call; left unhandled it is a 503 with ``Retry-After``."""

    def __init__(self, name: str, retry_after_s: float) -> None:
        retry_after = str(max(1, math.ceil(retry_after_s)))
        super().__init__(503, "server", f"{name} unavailable", headers={"Retry-After": retry_after})
        self.name = name


class CircuitBreaker:
    """closed → open after ``failure_threshold`` consecutive failures → half-open after ``reset_after_s``.

    Half-open lets exactly one trial call through: its success closes the circuit, its failure opens it
    again. Everything else is refused with :class:`CircuitOpen` without touching the dependency.
    Exceptions matching ``failure_on`` are failures; other exceptions are answers (the dependency
    worked); cancellation counts as neither. Use ``async with breaker: ...`` or
    ``await breaker.call(fn, *args)``.
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_after_s: float = 5.0,
        *,
        failure_on: ExceptionTypes = Exception,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self.failure_on = failure_on
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trial: asyncio.Task[object] | None = None
        self._gauge = BREAKER_STATE.labels(name)
        self._opens = BREAKER_OPENS.labels(name)
        self._gauge.set(0)

    @property
    def state(self) -> State:
        """The current state; an open circuit whose cool-down has passed reads (and becomes) half-open."""
        if self._state == "open" and time.monotonic() - self._opened_at >= self.reset_after_s:
            self._move("half_open")
        return self._state

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    def _move(self, state: State) -> None:
        self._state = state
        self._gauge.set(_STATE_VALUE[state])
        if state == "open":
            self._opened_at = time.monotonic()
            self._opens.inc()
        self._failures = 0
        self._trial = None

    async def __aenter__(self) -> None:
        state = self.state
        if state == "closed":
            return
        if state == "half_open" and self._trial is None:
            self._trial = asyncio.current_task()
            return
        remaining = self._opened_at + self.reset_after_s - time.monotonic()
        raise CircuitOpen(self.name, remaining)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        is_trial = self._trial is not None and self._trial is asyncio.current_task()
        if exc is not None and not isinstance(exc, Exception):
            if is_trial:  # cancelled trial: let the next caller try instead
                self._trial = None
            return
        failed = exc is not None and isinstance(exc, self.failure_on)
        if self._state == "half_open":
            if is_trial:
                self._move("open" if failed else "closed")
        elif self._state == "closed":
            if not failed:
                self._failures = 0
            else:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._move("open")
        # Calls that started before the circuit opened and end while it is open change nothing.

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)`` through the breaker."""
        async with self:
            return await fn(*args, **kwargs)
