"""The customer's emails (order confirmed, money refunded), sent over SMTP with aiosmtplib."""

from __future__ import annotations

import asyncio
import re
from email.message import EmailMessage

import aiosmtplib

from orders.store import Order

__all__ = ["confirmation", "refund_notice", "send"]

_NOT_LOCAL_PART = re.compile(r"[^A-Za-z0-9._+-]")


def _to(order: Order, sender: str, subject: str, message_id: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = f"{_NOT_LOCAL_PART.sub('_', order.username) or 'customer'}@users.asyncstack.test"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    return msg


def confirmation(order: Order, *, sender: str) -> EmailMessage:
    """The email for a paid order; its Message-ID is fixed per order, so duplicates are recognisable."""
    msg = _to(order, sender, f"Order {order.id} confirmed", f"<order-{order.id}@orders.asyncstack.test>")
    lines = [
        f"{item.quantity} x product {item.product_id} at {item.price_cents / 100:.2f}" for item in order.items
    ]
    msg.set_content(
        f"Hello {order.username},\n\nwe received your payment for order {order.id}:\n\n"
        + "\n".join(lines)
        + f"\n\nTotal: {order.total_cents / 100:.2f}\n"
    )
    return msg


def refund_notice(order: Order, amount_cents: int, *, sender: str) -> EmailMessage:
    """The email for money given back; its Message-ID too is fixed per order."""
    msg = _to(
        order, sender, f"Order {order.id} refunded", f"<order-{order.id}-refund@orders.asyncstack.test>"
    )
    msg.set_content(
        f"Hello {order.username},\n\norder {order.id} is {order.status.value}: we refunded the "
        f"{amount_cents / 100:.2f} you paid for it. It is on its way back to you.\n"
    )
    return msg


async def send(msg: EmailMessage, *, host: str, port: int, timeout_s: float) -> None:
    """Deliver ``msg``; ``timeout_s`` bounds the whole conversation, not just each step."""
    async with asyncio.timeout(timeout_s):
        await aiosmtplib.send(msg, hostname=host, port=port, timeout=timeout_s, start_tls=False)
