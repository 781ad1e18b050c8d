"""A malformed request is the client's error: one INFO line, never an ERROR with a traceback.

aiohttp answers a request it cannot parse (a bad method, header or URL, a line too long, a broken
chunk) with a 400 by itself, before any handler or the shared edge sees it, and logs it through
``aiohttp.server`` as "Error handling request" at ERROR level with the parser's traceback: noise that
reads like a server fault, and as many lines as a scanner cares to send. This filter turns each into one
INFO line naming the status and the parser's reason (printable, cut short); anything else aiohttp logs
is left as it is. (The edge answers the 4xx a handler raises without logging: RED counts them.)
:func:`asynccore.app.create_app` installs it for every service.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["install"]

REASON_MAX_CHARS = 200


class _ClientErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            reason = " ".join(str(exc.message).split())[:REASON_MAX_CHARS]
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "bad request from %s: %d %s"
            record.args = (remote, exc.code, reason)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def install() -> None:
    """On ``aiohttp.server``, once per process (apps built again in tests add nothing)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ClientErrors) for f in logger.filters):
        logger.addFilter(_ClientErrors())
