"""API docs: Swagger UI served by the service from the package's files, under its own CSP."""

from __future__ import annotations

import uuid

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asynccore.apidocs import DOCS_CSP, INITIALIZER, add_docs_routes, assets, docs_path_for
from asynccore.apidocs.checks import check_docs, parse_page
from asynccore.app import add_routes, create_app
from asynccore.settings import ServiceSettings

DOCUMENT = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}}


def _app() -> web.Application:
    app = create_app(f"test-{uuid.uuid4().hex[:8]}", ServiceSettings())

    async def document(request: web.Request) -> web.Response:
        return web.json_response(DOCUMENT)

    add_routes(app, [web.get("/api/things/openapi.json", document)])
    assert add_docs_routes(app, "/api/things/openapi.json", title="things <API>") == "/api/things/docs"
    return app


def test_the_docs_live_beside_the_document() -> None:
    assert docs_path_for("/api/openapi.json") == "/api/docs"
    assert docs_path_for("/api/orders/openapi.json") == "/api/orders/docs"
    with pytest.raises(ValueError):
        add_docs_routes(web.Application(), "https://elsewhere.example/openapi.json")


def test_the_assets_come_from_the_package_and_the_initializer_is_a_file() -> None:
    found = assets()
    assert {"swagger-ui-bundle.js", "swagger-ui.css", INITIALIZER} <= set(found)
    assert b"SwaggerUIBundle" in found["swagger-ui-bundle.js"].body
    assert b"data-openapi-url" in found[INITIALIZER].body
    assert all(asset.body for asset in found.values())


async def test_the_page_loads_from_its_own_origin_only() -> None:
    async with TestClient(TestServer(_app())) as client:
        report = await check_docs(client.session, str(client.make_url("")), "/api/things/docs")
        assert report.problems == []
        assert report.openapi_url == "/api/things/openapi.json" and report.document == DOCUMENT
        assert {url.split("?")[0].rsplit("/", 1)[1] for url in report.assets} >= {
            "swagger-ui-bundle.js",
            "swagger-ui.css",
            INITIALIZER,
        }
        resp = await client.get("/api/things/docs")
        assert resp.headers["Content-Security-Policy"] == DOCS_CSP
        assert "<title>things &lt;API&gt;</title>" in await resp.text()


async def test_assets_revalidate_and_unknown_ones_are_json_404s() -> None:
    async with TestClient(TestServer(_app())) as client:
        resp = await client.get("/api/things/docs/swagger-ui.css")
        etag = resp.headers["ETag"]
        assert resp.status == 200 and resp.headers["Cache-Control"].startswith("public, max-age=")
        resp = await client.get("/api/things/docs/swagger-ui.css", headers={"If-None-Match": etag})
        assert resp.status == 304 and resp.headers["ETag"] == etag
        resp = await client.head("/api/things/docs")
        assert resp.status == 200 and resp.content_type == "text/html"
        for missing in ("/api/things/docs/index.html", "/api/things/docs/..%2Fopenapi.json"):
            resp = await client.get(missing)
            assert resp.status == 404 and resp.content_type == "application/json", missing


def test_the_check_finds_what_a_browser_would_refuse() -> None:
    page = parse_page(
        '<script>alert(1)</script><script src="/a.js"></script><img src="x.png" onerror="y()">'
        '<link rel="stylesheet" href="https://cdn.example/s.css"><p style="color:red">'
        '<div data-openapi-url="/d.json"></div>'
    )
    assert page.references == ["/a.js", "x.png", "https://cdn.example/s.css"]
    assert page.openapi_url == "/d.json"
    assert page.inline == [
        "script element without src",
        "script text",
        "img onerror= attribute",
        "p style= attribute",
    ]
