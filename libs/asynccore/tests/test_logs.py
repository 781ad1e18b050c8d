"""JSON logs carry the request id; ``X-Request-ID`` is honoured, or made, and always echoed."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from asynccore.app import TASKS, add_routes, create_app
from asynccore.errors import ApiError
from asynccore.logs import (
    REQUEST_ID_HEADER,
    configure_logging,
    current_request_id,
    new_request_id,
    request_id_middleware,
    reset_request_id,
    set_request_id,
)
from asynccore.settings import ServiceSettings
from asynccore.testing import wait_until

log = logging.getLogger("test_logs")


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """configure_logging owns the root logger in a service; give pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def make_app() -> web.Application:
    app = create_app(f"test-{uuid.uuid4().hex[:8]}", ServiceSettings())

    async def whoami(request: web.Request) -> web.Response:
        log.info("serving", extra={"article": "a-slug"})
        return web.json_response({"request_id": current_request_id()})

    async def fails(request: web.Request) -> web.Response:
        raise ApiError(409, "slug", "taken")

    add_routes(app, [web.get("/whoami", whoami)])
    add_routes(app, [web.get("/fails", fails)])
    return app


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_root_logger")
async def test_json_log_lines_carry_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app()
    configure_logging("blogtest", "INFO", json=True)
    async with TestClient(TestServer(app)) as client:
        async with client.get("/whoami", headers={REQUEST_ID_HEADER: "rid-from-nginx"}) as resp:
            assert resp.status == 200
        log.info("outside any request")

    lines = json_lines(capsys.readouterr().err)
    serving = next(line for line in lines if line["message"] == "serving")
    assert serving["request_id"] == "rid-from-nginx"
    assert serving["service"] == "blogtest"
    assert serving["level"] == "INFO"
    assert serving["logger"] == "test_logs"
    assert serving["article"] == "a-slug"  # extra= fields become JSON keys
    assert "ts" in serving
    outside = next(line for line in lines if line["message"] == "outside any request")
    assert outside["request_id"] is None


@pytest.mark.usefixtures("restore_root_logger")
async def test_text_logs_show_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app()
    configure_logging("blogtest", "INFO", json=False)
    async with (
        TestClient(TestServer(app)) as client,
        client.get("/whoami", headers={REQUEST_ID_HEADER: "rid-text"}),
    ):
        pass
    assert any("[rid-text] serving" in line for line in capsys.readouterr().err.splitlines())


async def test_a_sent_request_id_is_honoured_and_echoed() -> None:
    async with (
        TestClient(TestServer(make_app())) as client,
        client.get("/whoami", headers={REQUEST_ID_HEADER: "abc-123"}) as resp,
    ):
        assert resp.headers[REQUEST_ID_HEADER] == "abc-123"
        assert await resp.json() == {"request_id": "abc-123"}


async def test_a_missing_request_id_is_generated_fresh_each_time() -> None:
    async with TestClient(TestServer(make_app())) as client:
        seen = set()
        for _ in range(2):
            async with client.get("/whoami") as resp:
                rid = resp.headers[REQUEST_ID_HEADER]
                assert len(rid) == 32 and int(rid, 16) >= 0
                assert await resp.json() == {"request_id": rid}
                seen.add(rid)
        assert len(seen) == 2


@pytest.mark.parametrize("sent", ["x" * 129, "", "tab\there"])
async def test_an_unusable_request_id_is_replaced(sent: str) -> None:
    async with (
        TestClient(TestServer(make_app())) as client,
        client.get("/whoami", headers={REQUEST_ID_HEADER: sent}) as resp,
    ):
        rid = resp.headers[REQUEST_ID_HEADER]
        assert rid != sent and len(rid) == 32


async def test_error_responses_echo_the_request_id_too() -> None:
    async with TestClient(TestServer(make_app())) as client:
        async with client.get("/fails", headers={REQUEST_ID_HEADER: "rid-409"}) as resp:
            assert resp.status == 409
            assert resp.headers[REQUEST_ID_HEADER] == "rid-409"
        async with client.get("/nowhere", headers={REQUEST_ID_HEADER: "rid-404"}) as resp:
            assert resp.status == 404
            assert resp.headers[REQUEST_ID_HEADER] == "rid-404"


async def test_background_tasks_keep_the_request_id_they_were_spawned_with() -> None:
    app = make_app()
    seen: list[str | None] = []

    async def record() -> None:
        seen.append(current_request_id())

    async def spawn(request: web.Request) -> web.Response:
        request.app[TASKS].spawn(record(), name="record-rid")
        return web.json_response({}, status=202)

    add_routes(app, [web.post("/spawn", spawn)])
    async with TestClient(TestServer(app)) as client:
        async with client.post("/spawn", headers={REQUEST_ID_HEADER: "rid-task"}) as resp:
            assert resp.status == 202
        await wait_until(lambda: seen == ["rid-task"], timeout=5)
    assert current_request_id() is None


async def test_request_id_middleware_works_on_its_own_in_a_plain_app() -> None:
    async def whoami(request: web.Request) -> web.Response:
        return web.json_response({"request_id": current_request_id()})

    app = web.Application(middlewares=[request_id_middleware])
    app.router.add_get("/whoami", whoami)
    async with TestClient(TestServer(app)) as client:
        async with client.get("/whoami", headers={REQUEST_ID_HEADER: "plain-1"}) as resp:
            assert resp.headers[REQUEST_ID_HEADER] == "plain-1"
            assert await resp.json() == {"request_id": "plain-1"}
        async with client.get("/missing", headers={REQUEST_ID_HEADER: "plain-2"}) as resp:
            assert resp.status == 404
            assert resp.headers[REQUEST_ID_HEADER] == "plain-2"


def test_new_request_ids_are_unique_hex() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in ids)


def test_set_request_id_is_what_log_lines_and_outgoing_calls_see() -> None:
    token = set_request_id("from-a-message")
    try:
        assert current_request_id() == "from-a-message"
    finally:
        reset_request_id(token)
    assert current_request_id() is None
