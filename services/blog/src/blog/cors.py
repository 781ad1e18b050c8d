"""CORS for the API: RealWorld front-ends are often served from another origin than the API.

Credentials travel in the ``Authorization`` header, never in cookies, so any origin may read the API
(``*``): a page on another origin gains nothing it could not get with its own token. The header is
added as the response is prepared, so error responses (401, 422 …) carry it too and a browser lets the
front-end read why a request failed.
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["enable_cors"]

API = "/api/"
ALLOW_HEADERS = "Authorization, Content-Type, X-Requested-With, X-Request-ID, If-None-Match"
EXPOSE_HEADERS = "ETag, X-Request-ID, Retry-After"


async def _allow_origin(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith(API):
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


async def preflight(request: web.Request) -> web.Response:
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": "86400",
        },
    )


def enable_cors(app: web.Application) -> None:
    app.on_response_prepare.append(_allow_origin)
    app.router.add_route("OPTIONS", API + "{tail:.*}", preflight)
