"""The orders API application: resources in dependency order, then routes."""

from __future__ import annotations

from aiohttp import web

from asynccore.app import create_app
from orders import api
from orders.relay import background
from orders.resources import database
from orders.settings import OrdersSettings
from orders.sightings import Sightings

__all__ = ["build_app"]


def build_app(settings: OrdersSettings) -> web.Application:
    app = create_app(
        "orders",
        settings,
        resources=[
            *database(settings, maxsize=settings.mysql_pool_size),
            background(settings),
        ],
    )
    app[api.CONFIG] = settings
    app[api.SIGHTINGS] = Sightings()  # one per process: concurrent buyers share what reads saw
    api.routes(app)
    return app
