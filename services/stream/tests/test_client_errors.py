"""A malformed request is the client's error: a 4xx and at most one INFO line, never an ERROR with a
traceback; ``/readyz`` names a failing dependency without the driver's error text."""

from __future__ import annotations

import asyncio
import logging

import pytest
from stream_testkit import Topics, serve, settings_for

from asynccore.testing import free_port
from devservers.kafka_broker import KafkaBroker

GARBAGE = [
    b"GARBAGE\r\n\r\n",
    b"GET /api/analytics/summary HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /api/live\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/live HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    b"POST /api/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nAuthorization: Bearer \xff\xfe\r\n\r\n{}",
    b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    b"Authorization: Token \xc3\xa9.\xc3\xa9.\xc3\xa9\r\n\r\n{}",
    b"GET /api/risk/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xc3\xa9\xc3\xa9\r\n\r\n",
    b"GET /api/analytics/summary?from=%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/live HTTP/1.1\r\nHost: x\r\nX-Real-IP: \xff\r\nX-Forwarded-For: ,,,\r\n\r\n",
]


async def test_malformed_requests_are_client_errors_logged_in_one_line(
    kafka: KafkaBroker, topics: Topics, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    statuses = []
    async with serve(settings_for(kafka, topics, prefix, stream_consume=False), port=port):
        for data in GARBAGE:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            await writer.drain()
            statuses.append((await asyncio.wait_for(reader.readline(), 5)).split(b" ")[1])
            writer.close()
            await writer.wait_closed()
    # The last request is a live stream from an address that is not one: served (the peer counts).
    assert all(status.startswith(b"4") for status in statuses[:-1]), statuses
    assert statuses[-1] == b"200"
    for record in caplog.records:
        assert record.levelno < logging.ERROR, record.getMessage()
        assert record.exc_info is None and not record.exc_text, record.getMessage()
    bad = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(bad) >= 4 and all("\n" not in r.getMessage() for r in bad)


async def test_readyz_names_the_failing_dependency_without_the_driver_text(
    kafka: KafkaBroker, topics: Topics, prefix: str
) -> None:
    nobody = free_port()
    settings = settings_for(
        kafka, topics, prefix, stream_consume=False, redis_url=f"redis://127.0.0.1:{nobody}/0"
    )
    async with serve(settings) as api, api.get("/readyz") as resp:
        assert resp.status == 503
        body = await resp.json()
    assert list(body["failing"]) == ["redis"]
    shown = str(body["failing"]["redis"])
    for driver_text in ("Error", "127.0.0.1", str(nobody), "refused", "Connect"):
        assert driver_text not in shown, body
