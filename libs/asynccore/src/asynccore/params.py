"""Query parameters, validated: a bad one is a 422 naming it, never a 500 further down."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web

from asynccore.errors import ApiError

__all__ = ["int_param"]

D = TypeVar("D")


def int_param(request: web.Request, name: str, default: D, *, lo: int, hi: int) -> int | D:
    """``?name=`` as an integer in ``[lo, hi]``; ``default`` when absent or empty.

    The upper bound is not optional: an unbounded integer reaches SQL drivers that cannot bind it.
    """
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(422, name, "must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(422, name, f"must be between {lo} and {hi}")
    return value
