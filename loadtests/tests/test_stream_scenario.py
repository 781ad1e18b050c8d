"""The stream_ingest scenario against a real stream process (its own Kafka broker, Redis under a
prefix of its own): both kinds of client pass the service's access rules and meet their SLOs."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from asynccore.testing import ServiceProcess, free_port, server_url
from devservers.kafka_broker import KafkaBroker

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = server_url("REDIS") + "/0"
SMOKE_BUDGET_S = 90


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as broker:
        yield broker


async def test_stream_ingest_smoke_run_meets_its_slos_with_the_services_credentials(
    broker: KafkaBroker,
) -> None:
    run = uuid.uuid4().hex[:10]
    port = free_port()
    prefix = f"load-stream:{run}:"
    credentials = {
        "JWT_SECRET": secrets.token_urlsafe(32),
        "STREAM_INGEST_TOKEN": secrets.token_urlsafe(32),
        "STREAM_ADMIN_TOKEN": secrets.token_urlsafe(32),
    }
    stream = ServiceProcess(
        [sys.executable, "-m", "stream"],
        env={
            **credentials,
            "STREAM_PORT": str(port),
            "KAFKA_BOOTSTRAP": broker.bootstrap,
            "REDIS_URL": REDIS_URL,
            "STREAM_TOPIC": f"events-{run}",
            "STREAM_DLQ_TOPIC": f"dlq-{run}",
            "STREAM_ALERTS_TOPIC": f"alerts-{run}",
            "STREAM_PARTITIONS": "4",
            "STREAM_REDIS_PREFIX": prefix,
            "STREAM_CONSUME": "false",  # ingest is what is loaded
            "LOG_JSON": "false",
        },
        health_url=f"http://127.0.0.1:{port}/readyz",
        name="stream",
    )
    await stream.start(timeout=60)
    try:
        locust = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "loadtests.run",
                "stream_ingest",
                "--smoke",
                "--host",
                f"http://127.0.0.1:{port}",
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "JWT_SECRET": credentials["JWT_SECRET"],
                "STREAM_INGEST_TOKEN": credentials["STREAM_INGEST_TOKEN"],
            },
            capture_output=True,
            text=True,
            timeout=SMOKE_BUDGET_S,
            check=False,
        )
    finally:
        await stream.stop()
        await _drop_prefix(prefix)
    report = locust.stdout + locust.stderr
    assert locust.returncode == 0, report[-4000:]
    assert "stream_ingest: SLOs met" in locust.stdout, report[-4000:]
    # Both kinds of client ran (an SLO'd endpoint without requests is a breach), neither was refused.
    for row in ("POST /api/events ", "POST /api/events (member)"):
        assert row in locust.stdout, report[-4000:]


async def _drop_prefix(prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
