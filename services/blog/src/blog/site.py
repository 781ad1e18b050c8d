"""The server-rendered site (``/``, ``/article/…``, ``/tag/…``, ``/profile/…``, sitemap, feed).

A page that does not exist is the site's HTML 404 page: a missing article, tag, profile or page
number, and any path a person types that nothing serves (``/login``, ``/editor``, ``/register`` …).
The rule is the path, not the ``Accept`` header: a GET or HEAD outside ``/api/`` is a page request,
answered in HTML; everything under ``/api/`` is API and its unknowns stay JSON (whatever a client
accepts), and so does a write to a path that does not exist. A known path asked with the wrong
method is still a JSON 405 naming the methods it allows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from asynccore.app import EDGE, add_routes
from asynccore.errors import ApiError
from asynccore.metrics import UNMATCHED
from blog import feeds, pages
from blog.cache import Entry
from blog.inputs import page_param
from blog.resources import SETTINGS, SITE
from blog.responses import HTML, Shape, send_cached

__all__ = ["add_site_routes"]

ATOM = "application/atom+xml; charset=utf-8"
XML = "application/xml; charset=utf-8"
CSS = "text/css; charset=utf-8"
# Pages hold text other people wrote, so a browser is told to run nothing but what they mean: no
# script at all (there is none), style from this origin only (one file), images from anywhere on the
# web (markdown and profiles link them), no framing (clickjacking), no forms, no <base> rewrite, no
# content-type guessing, and no full URL sent to other sites.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' https: http:; base-uri 'none';"
    " form-action 'none'; frame-ancestors 'none'"
)
BROWSER_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
STATIC_MAX_AGE_S = 7 * 24 * 3600  # its URL changes with its content (?v=<etag>)
# How pages of each content type are sent (the cache policy comes from the settings): built once.
SHAPES = web.AppKey("blog_page_shapes", dict[str, Shape])
# Any path outside /api/ (and /api itself, which is no API either): the pages' catch-all.
NOT_API = r"/{path:(?!api/).*}"
PAGE_METHODS = frozenset({"GET", "HEAD"})


def _not_found(request: web.Request) -> web.Response:
    body = pages.not_found_page(request.app[SITE])
    return web.Response(status=404, body=body, content_type="text/html", headers=BROWSER_HEADERS)


async def _send(
    request: web.Request, produce: Callable[[], Awaitable[Entry]], content_type: str = HTML
) -> web.Response:
    """The page ``produce`` makes, with ETag/304 and Cache-Control; a missing one is an HTML 404."""
    try:
        entry = await produce()
    except ApiError as exc:
        if exc.status not in (404, 422):  # 422: a malformed ?page= names no page either
            raise
        return _not_found(request)
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
    public_url = request.app[SETTINGS].blog_public_url.rstrip("/")
    text = f"User-agent: *\nAllow: /\nSitemap: {public_url}/sitemap.xml\n"
    return web.Response(text=text, headers=BROWSER_HEADERS)


async def stylesheet(request: web.Request) -> web.Response:
    return send_cached(request, pages.STYLESHEET, request.app[SHAPES][CSS])


async def no_such_page(request: web.Request) -> web.Response:
    """The catch-all outside ``/api/``: the HTML 404 page for a page request; otherwise what the shared
    edge answers any unmatched request (a JSON 405 naming the allowed methods, or a JSON 404)."""
    own = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not own:
            match, methods = await resource.resolve(request)
            if match is None:  # the path is known, the method is not
                allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    if request.method in PAGE_METHODS:
        return _not_found(request)
    raise web.HTTPNotFound()


def add_site_routes(app: web.Application) -> None:
    policy = f"public, max-age={app[SETTINGS].blog_page_max_age_s}"
    app[SHAPES] = {
        content_type: Shape(content_type, policy, BROWSER_HEADERS) for content_type in (HTML, XML, ATOM)
    }
    app[SHAPES][CSS] = Shape(CSS, f"public, max-age={STATIC_MAX_AGE_S}", BROWSER_HEADERS)
    # Errors the shared edge answers (JSON) are not to be sniffed into anything else either.
    app[EDGE].add_error_headers("/", {"X-Content-Type-Options": "nosniff"})
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
            web.get("/static/site.css", stylesheet),
        ],
    )
    # Last of the blog's routes, so it only takes what no other route does (routes added after it
    # under "/" would never be reached). Counted as unmatched in RED, like the edge's own catch-all.
    app.router.add_route("*", NOT_API, app[EDGE].wrap(no_such_page, route=UNMATCHED))
