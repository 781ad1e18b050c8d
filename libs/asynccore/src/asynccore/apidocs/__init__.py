"""API docs a person can click: Swagger UI for a service's OpenAPI document, served by the service.

``add_docs_routes(app, "/api/orders/openapi.json")`` adds, behind the edge, ``GET /api/orders/docs``
(the page) and ``GET /api/orders/docs/{asset}``: Swagger UI's script, style sheets and icon, read
from the ``swagger-ui-py`` package's files (nothing is fetched from another origin, at run time or
by the browser), and :data:`INITIALIZER`, the script that starts it on the document the page names.
The page runs no inline script and sends its own Content-Security-Policy (:data:`DOCS_CSP`: script,
style and requests from this origin only), so it works on a site whose other pages allow no script.

The docs routes are not API: they stay out of the OpenAPI documents, which the fuzz tests hold every
documented route to. :mod:`asynccore.apidocs.checks` checks a served page the way a browser loads it.
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from aiohttp import web

from asynccore.app import SERVICE, add_routes

__all__ = ["ASSET_TYPES", "DOCS_CSP", "INITIALIZER", "Asset", "add_docs_routes", "docs_path_for"]

# Swagger UI draws its icons from data: URLs in its style sheet; "Try it out" calls this origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": DOCS_CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
# Asset URLs carry their content hash (?v=), so browsers may keep them; the page is revalidated.
ASSET_CACHE = "public, max-age=604800"
PAGE_CACHE = "no-cache"
# application/javascript rather than text/javascript: the front door compresses that one.
ASSET_TYPES = {
    ".js": "application/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
INITIALIZER = "swagger-initializer.js"
# What the page loads from the package, by the names it serves them under (the package's own).
PACKAGED = ("swagger-ui.css", "index.css", "favicon-32x32.png", "swagger-ui-bundle.js")


@dataclass(frozen=True, slots=True)
class Asset:
    """A ready-to-send body with its type and validator."""

    body: bytes
    content_type: str
    etag: str  # quoted, as sent

    @classmethod
    def of(cls, body: bytes, content_type: str) -> Asset:
        return cls(body, content_type, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')

    @property
    def version(self) -> str:
        return self.etag.strip('"')


def _swagger_ui_static() -> Path:
    """The swagger-ui-py package's static folder, found without importing the package (which would
    import its framework handlers and template engine for nothing)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@cache
def assets() -> dict[str, Asset]:
    """Every asset the docs page loads, by name; read once per process."""
    static = _swagger_ui_static()
    found = {name: (static / name).read_bytes() for name in PACKAGED}
    found[INITIALIZER] = (Path(__file__).parent / INITIALIZER).read_bytes()
    return {name: Asset.of(body, ASSET_TYPES[Path(name).suffix]) for name, body in found.items()}


def docs_path_for(openapi_url: str) -> str:
    """Where the docs of ``openapi_url`` live: ``docs`` beside it (``/api/orders/openapi.json`` ->
    ``/api/orders/docs``), so the front door routes both to the same service."""
    return openapi_url.rsplit("/", 1)[0] + "/docs"


def _page(title: str, docs_path: str, openapi_url: str) -> bytes:
    found = assets()

    def url(name: str) -> str:
        return html.escape(f"{docs_path}/{name}?v={found[name].version}")

    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="{url("swagger-ui.css")}">
<link rel="stylesheet" href="{url("index.css")}">
<link rel="icon" type="image/png" href="{url("favicon-32x32.png")}">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{html.escape(openapi_url)}"></div>
<script src="{url("swagger-ui-bundle.js")}"></script>
<script src="{url(INITIALIZER)}"></script>
</body>
</html>
""".encode()


def _send(request: web.Request, asset: Asset, cache_control: str) -> web.Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": cache_control}
    if any(tag.value == asset.version for tag in request.if_none_match or ()):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


def add_docs_routes(
    app: web.Application, openapi_url: str, *, docs_path: str | None = None, title: str | None = None
) -> str:
    """Serve Swagger UI for the document at ``openapi_url`` (a path on this service) at ``docs_path``
    (default :func:`docs_path_for`) and return that path."""
    if not openapi_url.startswith("/") or openapi_url.startswith("//"):
        raise ValueError(f"openapi_url must be a path on this service, not {openapi_url!r}")
    path = docs_path or docs_path_for(openapi_url)
    page = Asset.of(_page(title or f"{app[SERVICE]} API", path, openapi_url), "text/html; charset=utf-8")
    served = assets()

    async def docs_page(request: web.Request) -> web.Response:
        return _send(request, page, PAGE_CACHE)

    async def docs_asset(request: web.Request) -> web.Response:
        asset = served.get(request.match_info["asset"])
        if asset is None:
            raise web.HTTPNotFound()
        return _send(request, asset, ASSET_CACHE)

    add_routes(app, [web.get(path, docs_page), web.get(path + "/{asset}", docs_asset)])
    return path
