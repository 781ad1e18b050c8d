"""Query parameters, validated: a bad one is a 422 naming it, never a 500."""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

from asynccore.errors import ApiError
from asynccore.params import int_param

__all__ = ["choice_param", "time_range"]


def choice_param(request: web.Request, name: str, default: str, choices: Collection[str]) -> str:
    value = request.query.get(name) or default
    if value not in choices:
        raise ApiError(422, name, f"must be one of {', '.join(sorted(choices))}")
    return value


def time_range(request: web.Request, now_ms: int, *, default_s: int, max_s: int) -> tuple[int, int]:
    """``from``/``to`` in epoch ms (``to`` defaults to now, ``from`` to ``default_s`` before it)."""
    to = int_param(request, "to", now_ms, lo=0, hi=2**53)
    start = int_param(request, "from", max(0, to - default_s * 1000), lo=0, hi=2**53)
    if start >= to:
        raise ApiError(422, "from", "must be before to")
    if to - start > max_s * 1000:
        raise ApiError(422, "from", f"range must be at most {max_s} s")
    return start, to
