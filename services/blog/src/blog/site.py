"""The server-rendered site (``/``, ``/article/…``, ``/tag/…``, ``/profile/…``, sitemap, feed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from asynccore.app import add_routes
from asynccore.errors import ApiError
from blog import feeds, pages
from blog.cache import Entry
from blog.inputs import page_param
from blog.resources import BLOG, SITE
from blog.responses import HTML, Shape, send_cached

__all__ = ["add_site_routes"]

ATOM = "application/atom+xml; charset=utf-8"
XML = "application/xml; charset=utf-8"
# How pages of each content type are sent (the cache policy comes from the settings): built once.
SHAPES = web.AppKey("blog_page_shapes", dict[str, Shape])


async def _send(
    request: web.Request, produce: Callable[[], Awaitable[Entry]], content_type: str = HTML
) -> web.Response:
    """The page ``produce`` makes, with ETag/304 and Cache-Control; a missing one is an HTML 404."""
    site = request.app[SITE]
    try:
        entry = await produce()
    except ApiError as exc:
        if exc.status not in (404, 422):  # 422: a malformed ?page= names no page either
            raise
        return web.Response(status=404, body=pages.not_found_page(site), content_type="text/html")
    return send_cached(request, entry, request.app[SHAPES][content_type])


async def home(request: web.Request) -> web.Response:
    return await _send(request, lambda: pages.home_page(request.app[SITE], page_param(request)))


async def article(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    site = request.app[SITE]
    entry = site.cache.peek(pages.PAGE, pages.article_key(slug))
    if entry is not None:  # the hot path: no await, prepared headers
        return send_cached(request, entry, request.app[SHAPES][HTML])
    return await _send(request, lambda: pages.article_page(site, slug))


async def tag(request: web.Request) -> web.Response:
    name = request.match_info["tag"]
    return await _send(request, lambda: pages.tag_page(request.app[SITE], name, page_param(request)))


async def profile(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    return await _send(request, lambda: pages.profile_page(request.app[SITE], username, page_param(request)))


async def sitemap(request: web.Request) -> web.Response:
    return await _send(request, lambda: feeds.sitemap(request.app[SITE]), XML)


async def atom(request: web.Request) -> web.Response:
    return await _send(request, lambda: feeds.atom_feed(request.app[SITE]), ATOM)


async def robots(request: web.Request) -> web.Response:
    public_url = request.app[BLOG].blog_public_url.rstrip("/")
    return web.Response(text=f"User-agent: *\nAllow: /\nSitemap: {public_url}/sitemap.xml\n")


def add_site_routes(app: web.Application) -> None:
    policy = f"public, max-age={app[BLOG].blog_page_max_age_s}"
    app[SHAPES] = {content_type: Shape(content_type, policy) for content_type in (HTML, XML, ATOM)}
    add_routes(
        app,
        [
            web.get("/", home),
            web.get("/article/{slug}", article),
            web.get("/tag/{tag}", tag),
            web.get("/profile/{username}", profile),
            web.get("/sitemap.xml", sitemap),
            web.get("/feed.atom", atom),
            web.get("/robots.txt", robots),
        ],
    )
