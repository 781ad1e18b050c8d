"""The blog app: asynccore's app factory, the blog's resources, the API and the site."""

from __future__ import annotations

from aiohttp import web

from asynccore.app import create_app
from blog.api import add_api_routes
from blog.cors import enable_cors
from blog.resources import resources
from blog.settings import BlogSettings
from blog.site import add_site_routes

__all__ = ["build_app"]


def build_app(settings: BlogSettings) -> web.Application:
    app = create_app("blog", settings, resources=resources(settings))
    add_api_routes(app)
    enable_cors(app)
    add_site_routes(app)
    return app
