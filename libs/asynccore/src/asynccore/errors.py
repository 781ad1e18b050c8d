"""One error shape for every service: ``{"errors": {"<field>": ["<message>"]}}``.

It is the RealWorld spec's shape, so the blog is spec-exact and the other services are machine-readable
the same way: a client always finds which field was wrong under ``errors``.
"""

from __future__ import annotations

import orjson
from aiohttp import web

__all__ = ["ApiError", "error_body", "error_response"]


def error_body(errors: dict[str, list[str]]) -> bytes:
    return orjson.dumps({"errors": errors})


def error_response(
    status: int, errors: dict[str, list[str]], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=error_body(errors), content_type="application/json", headers=headers
    )


class ApiError(Exception):
    """Raise from handlers or plain logic; the error middleware turns it into a JSON response."""

    def __init__(
        self,
        status: int,
        field: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        errors: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(f"{status} {field}: {message}")
        self.status = status
        self.errors = errors if errors is not None else {field: [message]}
        self.headers = headers

    def response(self) -> web.Response:
        return error_response(self.status, self.errors, self.headers)
