"""The stream API docs (/api/analytics/docs): Swagger UI from the service's own origin."""

from __future__ import annotations

import aiohttp
import orjson

from asynccore.apidocs.checks import check_docs
from stream.openapi import openapi_document


async def test_the_docs_page_loads_from_stream_alone_and_shows_its_document(
    api: aiohttp.ClientSession,
) -> None:
    report = await check_docs(api, "", "/api/analytics/docs")  # the session is bound to the service
    assert report.problems == []
    assert report.openapi_url == "/api/analytics/openapi.json"
    assert report.document == orjson.loads(orjson.dumps(openapi_document()))
    assert any("/api/analytics/docs/swagger-ui-bundle.js" in url for url in report.assets)
    assert not [path for path in openapi_document()["paths"] if "docs" in path]  # not documented
