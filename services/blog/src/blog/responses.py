"""Sending cached bytes: ETag, conditional GET (304) and Cache-Control.

A cache hit is the blog's hottest path, so everything about its answer that does not change per
request is built once: a :class:`Shape` holds the headers of one kind of answer (content type, cache
policy, CORS), and the headers of one entry in one shape (those plus its ETag) are kept with the entry
(``Entry.prepared``). A hit then costs one dict lookup and a header copy aiohttp makes anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from aiohttp import hdrs, web
from multidict import CIMultiDict

from blog.local_store import Entry

__all__ = ["HTML", "JSON", "Shape", "not_modified", "send_cached"]

JSON = "application/json"
HTML = "text/html; charset=utf-8"


class Shape:
    """The headers every cached answer of one kind carries; built once, used as a key."""

    __slots__ = ("_common", "_content_type")

    def __init__(
        self, content_type: str, cache_control: str, extra: Mapping[str, str] = MappingProxyType({})
    ) -> None:
        self._content_type = content_type
        self._common = {hdrs.CACHE_CONTROL: cache_control, **extra}

    def not_modified(self, etag: str) -> CIMultiDict[str]:
        """A 304 carries the validator and the cache policy, no Content-Type (it has no body)."""
        return CIMultiDict({hdrs.ETAG: etag, **self._common})

    def full(self, etag: str) -> CIMultiDict[str]:
        headers = self.not_modified(etag)
        headers[hdrs.CONTENT_TYPE] = self._content_type
        return headers


def not_modified(header: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` value names ``etag`` (weak comparison, as RFC 9110 asks for GET)."""
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def send_cached(request: web.Request, entry: Entry, shape: Shape) -> web.Response:
    """``entry`` as ``shape`` says, or a 304 when the client already holds it."""
    match = request.headers.get(hdrs.IF_NONE_MATCH)
    if match and not_modified(match, entry.etag):
        return web.Response(status=304, headers=shape.not_modified(entry.etag))
    headers = entry.prepared.get(shape)
    if headers is None:
        headers = entry.prepared[shape] = shape.full(entry.etag)
    return web.Response(body=entry.body, headers=headers)
