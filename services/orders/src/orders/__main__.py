"""``uv run orders`` / ``python -m orders``: the API on ``ORDERS_PORT``."""

from __future__ import annotations

import gc

from aiohttp import web

from asynccore.app import run
from asynccore.settings import load_settings
from orders.app import build_app
from orders.settings import OrdersSettings


async def _freeze_startup_heap(app: web.Application) -> None:
    """Measured in the flash-sale benchmark: full collections of the cyclic GC took 60-170 ms each,
    every few hundred requests, stalling every request in the process; nearly all they scanned was
    what start-up made (modules, pools, the app), which lives as long as the process. Freeze that
    (runs after the resources started) and collect young objects less eagerly."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def main() -> None:
    settings = load_settings(OrdersSettings)
    app = build_app(settings)
    app.on_startup.append(_freeze_startup_heap)
    run(app, settings.orders_port)


if __name__ == "__main__":
    main()
