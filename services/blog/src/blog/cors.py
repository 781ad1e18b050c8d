"""CORS for the API: RealWorld front-ends are often served from another origin than the API.

Credentials travel in the ``Authorization`` header, never in cookies, so any origin may read the API
(``*``): a page on another origin gains nothing it could not get with its own token. Error responses
(401, 422 …) carry the headers too, so a browser lets the front-end read why a request failed.
"""

from __future__ import annotations

from aiohttp import web

from asynccore.app import EDGE, add_routes

__all__ = ["CORS_HEADERS", "enable_cors"]

API = "/api/"
ALLOW_HEADERS = "Authorization, Content-Type, X-Requested-With, X-Request-ID, If-None-Match"
# API handlers send these with every answer (built once); the shared edge adds them to its errors.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "ETag, X-Request-ID, Retry-After",
}


async def preflight(request: web.Request) -> web.Response:
    return web.Response(
        status=204,
        headers={
            **CORS_HEADERS,
            "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": "86400",
        },
    )


def enable_cors(app: web.Application) -> None:
    app[EDGE].add_error_headers(API, CORS_HEADERS)  # the errors the shared edge answers: 401, 404, 422 …
    add_routes(app, [web.route("OPTIONS", API + "{tail:.*}", preflight)])
