"""The dev servers as real HTTP servers on free ports, in this process."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from asynccore.testing import free_port
from devservers import payment, smtp

# The servers are asynccore apps, which refuse to start without a JWT secret (no default in code).
os.environ.setdefault("JWT_SECRET", secrets.token_urlsafe(32))


async def _serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


class Sandbox:
    def __init__(self, url: str, state: payment.Sandbox) -> None:
        self.url = url
        self.state = state


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """The payment sandbox on a free port."""
    port = free_port()
    app = payment.build_app(payment.SandboxSettings())
    runner = await _serve(app, port)
    yield Sandbox(f"http://127.0.0.1:{port}", app[payment.SANDBOX])
    await runner.cleanup()


class Sink:
    def __init__(self, smtp_port: int, http_url: str, mailbox: smtp.Mailbox) -> None:
        self.smtp_port = smtp_port
        self.http_url = http_url
        self.mailbox = mailbox


@pytest.fixture
async def smtp_sink() -> AsyncIterator[Sink]:
    """The SMTP sink: real SMTP and HTTP servers on free ports."""
    smtp_port, http_port = free_port(), free_port()
    app = smtp.build_app(smtp.SinkSettings(smtp_port=smtp_port, smtp_sink_host="127.0.0.1"))
    runner = await _serve(app, http_port)
    yield Sink(smtp_port, f"http://127.0.0.1:{http_port}", app[smtp.MAILBOX])
    await runner.cleanup()
