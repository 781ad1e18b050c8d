"""Each service's API docs (Swagger UI) through the front door: the page, every asset it loads and
the OpenAPI document it shows all come from that service, on the front door's origin."""

from __future__ import annotations

import aiohttp
import pytest
from conftest import Stack

from asynccore.apidocs.checks import check_docs
from asynccore.testing import wait_until

pytestmark = pytest.mark.stack

TIMEOUT = aiohttp.ClientTimeout(total=10)

DOCS = [
    ("blog", "/api/docs", "/api/openapi.json"),
    ("orders", "/api/orders/docs", "/api/orders/openapi.json"),
    ("stream", "/api/analytics/docs", "/api/analytics/openapi.json"),
]


async def _upstream(stack: Stack, request_id: str) -> set[str]:
    """The replicas nginx tried for a request, from its access log."""
    await wait_until(lambda: stack.access_log_entry(request_id) is not None, timeout=5, message=request_id)
    entry = stack.access_log_entry(request_id)
    assert entry is not None
    return {addr.strip() for addr in str(entry["upstream_addr"]).split(",") if addr.strip()}


@pytest.mark.parametrize(("service", "docs", "openapi"), DOCS)
async def test_each_service_serves_its_docs_through_the_front_door(
    stack: Stack, request_id: str, service: str, docs: str, openapi: str
) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        report = await check_docs(session, stack.front, docs)
        assert report.problems == []
        assert report.openapi_url == openapi and report.document is not None
        assert len(report.assets) >= 4  # style sheets, icon, Swagger UI, its initializer
        bundle = next(url for url in report.assets if "/swagger-ui-bundle.js" in url)
        headers = {"X-Request-ID": request_id, "Accept-Encoding": "gzip"}
        async with session.get(bundle, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers.get("Content-Encoding") == "gzip"  # 1.5 MB of script is sent compressed
    assert await _upstream(stack, request_id) <= stack.upstream_addrs(service)
    assert await _upstream(stack, request_id)


async def test_the_front_door_sends_nothing_else_under_the_docs_to_the_blog(stack: Stack) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for path in ("/api/docsX", "/api/documents"):
            async with session.get(stack.front + path) as resp:
                assert resp.status == 404 and resp.content_type == "application/json", path
