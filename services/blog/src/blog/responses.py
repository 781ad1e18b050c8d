"""Sending cached bytes: ETag, conditional GET (304) and Cache-Control."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from aiohttp import web

from blog.cache import Entry

__all__ = ["HTML", "JSON", "cached_response", "not_modified"]

JSON = "application/json"
HTML = "text/html; charset=utf-8"


def not_modified(request: web.Request, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 asks for GET)."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def cached_response(
    request: web.Request,
    entry: Entry,
    content_type: str,
    cache_control: str,
    extra: Mapping[str, str] = MappingProxyType({}),
) -> web.Response:
    headers = {"ETag": entry.etag, "Cache-Control": cache_control, **extra}
    if not_modified(request, entry.etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = content_type
    return web.Response(body=entry.body, headers=headers)
