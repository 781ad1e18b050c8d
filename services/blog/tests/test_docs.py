"""The blog's API docs (/api/docs): Swagger UI from the blog's own origin, for its OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import orjson
from blog_testing import Client

from asynccore.apidocs.checks import check_docs

SPEC = Path(__file__).parents[1] / "src" / "blog" / "openapi.json"


async def test_the_docs_page_loads_from_the_blog_alone_and_shows_its_document(client: Client) -> None:
    report = await check_docs(client.session, str(client.make_url("")), "/api/docs")
    assert report.problems == []
    assert report.openapi_url == "/api/openapi.json"
    assert report.document is not None and report.document == orjson.loads(SPEC.read_bytes())
    assert any("/api/docs/swagger-ui-bundle.js" in url for url in report.assets)
    # "Try it out" calls this blog, not the RealWorld demo server the spec came with.
    assert report.document["servers"][0]["url"] == "/api"


async def test_the_docs_allow_their_own_scripts_while_the_pages_allow_none(client: Client) -> None:
    docs = (await client.get("/api/docs")).headers["Content-Security-Policy"]
    assert "script-src 'self'" in docs and "unsafe-" not in docs and "default-src 'none'" in docs
    page = (await client.get("/")).headers["Content-Security-Policy"]
    assert "script-src" not in page and "default-src 'none'" in page


async def test_the_docs_are_not_in_the_document(client: Client) -> None:
    spec = await (await client.get("/api/openapi.json")).json()
    assert not [path for path in spec["paths"] if "docs" in path]
