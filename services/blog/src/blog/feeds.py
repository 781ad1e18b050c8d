"""Machine-readable site maps: ``/sitemap.xml`` for search engines, ``/feed.atom`` for readers.

Both carry absolute links built from the public base URL (``BLOG_PUBLIC_URL``): the address readers
reach the site at, which behind nginx is not the address this process listens on.
"""

from __future__ import annotations

from blog import articles, tags
from blog.cache import Entry
from blog.db import Database, fetch_all
from blog.inputs import ArticleFilters
from blog.markup import render_markdown
from blog.pages import Site

__all__ = ["atom_feed", "sitemap"]

# The sitemap protocol allows 50,000 URLs per file.
SITEMAP_ARTICLES = 45_000
SITEMAP_OTHERS = 2_000
FEED_ENTRIES = 20


async def _authors(db: Database) -> list[str]:
    async with db.read() as conn:
        rows = await fetch_all(
            conn,
            "sitemap_authors",
            "SELECT u.username FROM users u WHERE EXISTS (SELECT 1 FROM articles a WHERE a.author_id = u.id)"
            " ORDER BY u.username LIMIT ?",
            (SITEMAP_OTHERS,),
        )
    return [row["username"] for row in rows]


async def _article_stamps(db: Database) -> list[dict[str, str]]:
    async with db.read() as conn:
        rows = await fetch_all(
            conn,
            "sitemap_articles",
            "SELECT slug, updated_at FROM articles ORDER BY id DESC LIMIT ?",
            (SITEMAP_ARTICLES,),
        )
    return [{"slug": row["slug"], "updatedAt": row["updated_at"]} for row in rows]


async def sitemap(site: Site) -> Entry:
    async def load() -> bytes:
        stamps = await _article_stamps(site.db)
        return site.render(
            "sitemap.xml",
            articles=stamps,
            updated=max((a["updatedAt"] for a in stamps), default=None),
            tags=(await tags.fetch_tags(site.db))[:SITEMAP_OTHERS],
            authors=await _authors(site.db),
        )

    return await site.cache.get("sitemap", "all", (*articles.LIST_DEPS, articles.TAGS_VERSION), load)


async def atom_feed(site: Site) -> Entry:
    async def load() -> bytes:
        latest, _ = await articles.fetch_page(site.db, ArticleFilters(limit=FEED_ENTRIES), with_body=True)
        entries = [{"article": a, "html": str(render_markdown(a["body"]))} for a in latest]
        updated = max((a["updatedAt"] for a in latest), default="1970-01-01T00:00:00.000Z")
        return site.render("feed.atom", entries=entries, updated=updated)

    return await site.cache.get("feed", "atom", articles.LIST_DEPS, load)
