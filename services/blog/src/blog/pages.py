"""Server-rendered HTML pages, cached whole as ready-to-send bytes like the API.

Pages are anonymous (no cookies), so one rendering serves every reader: a page is rendered on a cache
miss only, and its ETag lets browsers and crawlers revalidate with a 304 instead of a download.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from asynccore.errors import ApiError
from blog import articles, comments, profiles, tags
from blog.cache import Cache, Entry, etag_of
from blog.db import Database
from blog.inputs import ArticleFilters, strip_not_text, text_problem
from blog.markup import render_markdown

__all__ = [
    "PAGE",
    "SITE_NAME",
    "STYLESHEET",
    "Site",
    "article_key",
    "article_page",
    "below_title",
    "home_page",
    "not_found_page",
    "profile_page",
    "tag_page",
    "templates",
]

SITE_NAME = "conduit"
HOME_TAGS = 20
PAGE = "page"  # the cache family of rendered pages
# The pages' only style, a file of its own: the pages' CSP allows no inline style or script. Its URL
# carries its ETag, so browsers may keep it long and still see a new one at once.
_CSS = (Path(__file__).parent / "static" / "site.css").read_bytes()
STYLESHEET = Entry(_CSS, etag_of(_CSS), (), 0.0)
# A heading tag, opening or closing, in sanitised HTML.
_HEADING = re.compile(r"<(/?)h([1-6])\b")


def _text_only(value: Any) -> Any:
    """Every value a template prints, without characters XML refuses: input validation keeps them out
    of new rows, this keeps a row from before it (or written around it) from breaking the Atom feed or
    the sitemap for everyone. Markup stays Markup (it is escaped already)."""
    if isinstance(value, str) and text_problem(value) is not None:
        cleaned = strip_not_text(value)
        return Markup(cleaned) if isinstance(value, Markup) else cleaned
    return value


def templates(public_url: str) -> Environment:
    env = Environment(
        loader=PackageLoader("blog", "templates"),
        autoescape=select_autoescape(["html", "xml", "atom"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_text_only,
    )
    env.filters["path_segment"] = lambda value: quote(str(value), safe="")
    env.globals.update(
        site_name=SITE_NAME, public_url=public_url.rstrip("/"), css_version=STYLESHEET.etag.strip('"')
    )
    return env


@dataclass(frozen=True, slots=True)
class Site:
    """What rendering a page needs."""

    cache: Cache
    db: Database
    env: Environment
    page_size: int = 20

    def render(self, template: str, **context: Any) -> bytes:
        return self.env.get_template(template).render(**context).encode()

    def filters(self, page: int, **where: str) -> ArticleFilters:
        return ArticleFilters(limit=self.page_size, offset=(page - 1) * self.page_size, **where)

    def page_count(self, page: int, total: int) -> int:
        """How many pages ``total`` articles fill; 404 for a page past the last (page 1 always exists)."""
        pages = max(1, math.ceil(total / self.page_size))
        if page > pages:
            raise ApiError(404, "page", "not found")
        return pages


def _listing_deps(*extra: str) -> tuple[str, ...]:
    return (*articles.LIST_DEPS, *extra)


async def home_page(site: Site, page: int) -> Entry:
    async def load() -> bytes:
        found, total = await articles.fetch_page(site.db, site.filters(page))
        popular = (await tags.fetch_tags(site.db))[:HOME_TAGS]
        pages = site.page_count(page, total)
        canonical = "/" if page == 1 else f"/?page={page}"
        return site.render(
            "home.html", articles=found, tags=popular, page=page, pages=pages, canonical=canonical
        )

    return await site.cache.get(PAGE, f"home:{page}", _listing_deps(articles.TAGS_VERSION), load)


async def tag_page(site: Site, tag: str, page: int) -> Entry:
    async def load() -> bytes:
        found, total = await articles.fetch_page(site.db, site.filters(page, tag=tag))
        if total == 0:
            raise ApiError(404, "tag", "not found")
        pages = site.page_count(page, total)
        canonical = f"/tag/{quote(tag, safe='')}" + (f"?page={page}" if page > 1 else "")
        return site.render("tag.html", tag=tag, articles=found, page=page, pages=pages, canonical=canonical)

    return await site.cache.get(PAGE, f"tag:{page}:{tag}", _listing_deps(), load)


async def profile_page(site: Site, username: str, page: int) -> Entry:
    async def load() -> bytes:
        profile = await profiles.fetch_profile(site.db, None, username)
        found, total = await articles.fetch_page(site.db, site.filters(page, author=username))
        pages = site.page_count(page, total)
        canonical = f"/profile/{quote(username, safe='')}" + (f"?page={page}" if page > 1 else "")
        return site.render(
            "profile.html", profile=profile, articles=found, page=page, pages=pages, canonical=canonical
        )

    return await site.cache.get(PAGE, f"profile:{page}:{username}", _listing_deps(), load)


def below_title(body_html: Markup) -> Markup:
    """An article's rendered body with every heading one level down (``#`` is an ``h2``; an ``h6``
    stays one), so the title is the page's only ``h1`` and the outline stays in order. The body is
    sanitised HTML, where text carries ``<`` escaped: only tags match (an ``<h1`` inside an attribute
    value would be renamed too, which changes that text and nothing else)."""
    return Markup(_HEADING.sub(lambda m: f"<{m[1]}h{min(int(m[2]) + 1, 6)}", body_html))


def article_key(slug: str) -> str:
    return "article:" + slug


async def article_page(site: Site, slug: str) -> Entry:
    async def load() -> bytes:
        article = await articles.fetch_article(site.db, slug)
        thread = await comments.fetch_comments(site.db, None, slug)
        return site.render(
            "article.html",
            article=article,
            body_html=below_title(render_markdown(article["body"])),
            comments=thread,
            canonical=f"/article/{quote(slug, safe='')}",
        )

    return await site.cache.get(PAGE, article_key(slug), articles.article_deps(slug), load)


def not_found_page(site: Site) -> bytes:
    return site.render("not_found.html", canonical="/")
