"""The SMTP sink: mail sent over real SMTP is countable over HTTP, by Message-ID."""

from __future__ import annotations

from email.message import EmailMessage

import aiohttp
import aiosmtplib
from conftest import Sink


async def test_mail_is_counted_by_message_id(smtp_sink: Sink) -> None:
    for _ in range(2):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "shop@example.com", "buyer@example.com", "Order 7"
        msg["Message-ID"] = "<order-7@example.com>"
        msg.set_content("confirmed")
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=smtp_sink.smtp_port, timeout=5, start_tls=False)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(f"{smtp_sink.http_url}/messages", params={"message_id": "<order-7@example.com>"}) as resp,
    ):
        body = await resp.json()
    assert body["count"] == 2 and body["messages"][0]["subject"] == "Order 7"
    assert smtp_sink.mailbox.total == 2
