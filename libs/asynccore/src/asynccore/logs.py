"""Structured JSON logs carrying the request id of the request being served.

The id comes from ``X-Request-ID`` (nginx sets one) or is made here; it lives in a contextvar so every
log line, outgoing HTTP call (see :mod:`asynccore.pools.http`) and published message can carry it.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token

from aiohttp import web
from multidict import istr
from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "REQUEST_ID_HEADER",
    "configure_logging",
    "current_request_id",
    "incoming_request_id",
    "new_request_id",
    "request_id_middleware",
    "reset_request_id",
    "set_request_id",
]

REQUEST_ID_HEADER = istr("X-Request-ID")
MAX_REQUEST_ID_LEN = 128
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# Ids need to be unique, not secret: a random per-process prefix plus a counter costs a fifth of uuid4.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count()


def current_request_id() -> str | None:
    return _request_id.get()


def new_request_id() -> str:
    """32 hex characters, unique across processes and restarts."""
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def incoming_request_id(request: web.Request) -> str:
    """The id the caller sent in ``X-Request-ID`` if it is usable, else a new one.

    A client-sent id goes into every log line and outgoing call: it must be short and printable.
    """
    sent = request.headers.get(REQUEST_ID_HEADER)
    if sent and len(sent) <= MAX_REQUEST_ID_LEN and sent.isascii() and sent.isprintable():
        return sent
    return new_request_id()


def set_request_id(rid: str | None) -> Token[str | None]:
    """Make ``rid`` the current request id (e.g. from a consumed message's headers) until reset."""
    return _request_id.set(rid)


def reset_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


def configure_logging(service: str, level: str = "INFO", *, json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = incoming_request_id(request)
    token = _request_id.set(rid)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = rid
        raise
    finally:
        _request_id.reset(token)
    response.headers[REQUEST_ID_HEADER] = rid
    return response
