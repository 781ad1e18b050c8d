"""``uv run orders`` / ``python -m orders``: the API on ``ORDERS_PORT``."""

from __future__ import annotations

from asynccore.app import run
from asynccore.settings import load_settings
from orders.app import build_app
from orders.settings import OrdersSettings


def main() -> None:
    settings = load_settings(OrdersSettings)
    run(build_app(settings), settings.orders_port)


if __name__ == "__main__":
    main()
