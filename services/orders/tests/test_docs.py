"""The orders API docs (/api/orders/docs): Swagger UI from the service's own origin."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asynccore.apidocs.checks import check_docs
from orders.app import build_app
from orders.openapi import document
from orders.settings import OrdersSettings

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(settings: OrdersSettings) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_app(settings))) as client:
        yield client


async def test_the_docs_page_loads_from_orders_alone_and_shows_its_document(client: Client) -> None:
    report = await check_docs(client.session, str(client.make_url("")), "/api/orders/docs")
    assert report.problems == []
    assert report.openapi_url == "/api/orders/openapi.json"
    assert report.document == document()
    assert any("/api/orders/docs/swagger-ui-bundle.js" in url for url in report.assets)
    assert not [path for path in document()["paths"] if "docs" in path]  # not API: not documented
