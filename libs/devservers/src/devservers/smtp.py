"""A local SMTP sink (aiosmtpd) that keeps what it receives countable over HTTP.

SMTP on ``SMTP_PORT`` (default 2525) accepts any mail; ``GET /messages`` on ``SMTP_SINK_HTTP_PORT``
(default 8025) lists the most recent ones and counts all, optionally only those with a given
``message_id`` — the orders worker sets one per order, so a test can see an email arrived exactly once.
"""

from __future__ import annotations

import asyncio
import email
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator
from email.policy import default as default_policy
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import Field

from asynccore.app import CleanupCtx, add_routes, create_app, run
from asynccore.settings import ServiceSettings, load_settings

__all__ = ["Mailbox", "SinkSettings", "build_app", "main"]

KEPT_MESSAGES = 1000


class SinkSettings(ServiceSettings):
    smtp_port: int = Field(default=2525, gt=0, lt=65536)
    smtp_sink_http_port: int = Field(default=8025, gt=0, lt=65536)
    smtp_sink_host: str = "0.0.0.0"


class Mailbox:
    """aiosmtpd handler: remembers the last ``KEPT_MESSAGES`` and counts every message by Message-ID."""

    def __init__(self) -> None:
        self.total = 0
        self.by_message_id: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=KEPT_MESSAGES)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        parsed = email.message_from_bytes(raw, policy=default_policy)
        message_id = str(parsed.get("Message-ID", ""))
        self.total += 1
        self.by_message_id[message_id] += 1
        self.recent.append(
            {
                "message_id": message_id,
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "subject": str(parsed.get("Subject", "")),
            }
        )
        return "250 Message accepted for delivery"


MAILBOX = web.AppKey("mailbox", Mailbox)


def smtp_server(host: str, port: int) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        mailbox = app[MAILBOX]
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SMTP(mailbox, hostname="smtp-sink"), host, port)
        yield
        server.close()
        await server.wait_closed()

    return ctx


async def list_messages(request: web.Request) -> web.Response:
    mailbox = request.app[MAILBOX]
    wanted = request.query.get("message_id")
    if wanted is None:
        return web.json_response({"count": mailbox.total, "messages": list(mailbox.recent)})
    matching = [msg for msg in mailbox.recent if msg["message_id"] == wanted]
    return web.json_response({"count": mailbox.by_message_id[wanted], "messages": matching})


def build_app(settings: SinkSettings) -> web.Application:
    app = create_app(
        "smtp-sink", settings, resources=[smtp_server(settings.smtp_sink_host, settings.smtp_port)]
    )
    app[MAILBOX] = Mailbox()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO
    add_routes(app, [web.get("/messages", list_messages)])
    return app


def main() -> None:
    settings = load_settings(SinkSettings)
    run(build_app(settings), settings.smtp_sink_http_port)


if __name__ == "__main__":
    main()
