"""The server-rendered site: pages, sanitising, conditional GET, sitemap and feed, and a link crawl."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser

from blog_testing import Client, auth, post_article, register
from prometheus_client import REGISTRY

from blog.markup import render_markdown
from crawler import crawl

ATTACKS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    '<a href="javascript:alert(1)">x</a>',
    "<iframe src=//evil.example></iframe>",
    "<svg onload=alert(1)>",
]


class _Elements(HTMLParser):
    """Every element and attribute a browser would build from a page (text stays text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]


def assert_inert(html: str) -> None:
    parsed = _Elements()
    parsed.feed(html)
    assert not {"script", "iframe", "svg", "object", "embed"} & set(parsed.tags)
    for name, value in parsed.attributes:
        assert not name.startswith("on"), name
        assert not value.strip().lower().startswith("javascript:"), value


def test_markdown_is_rendered_and_nothing_executable_survives() -> None:
    html = str(render_markdown("# Title\n\n**bold** and `code`\n\n" + "\n\n".join(ATTACKS)))
    assert "<h1>Title</h1>" in html and "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert_inert(html)


async def test_pages_render_escape_and_link(client: Client) -> None:
    token = await register(client, "writer")
    hostile = "\n\n".join(ATTACKS)
    article = await post_article(
        client, token, "Title <script>alert(1)</script>", body=hostile, tagList=["c/c++", "été"]
    )
    await client.post(
        f"/api/articles/{article['slug']}/comments",
        json={"comment": {"body": "<script>alert(2)</script>"}},
        headers=auth(token),
    )
    for path in (
        "/",
        f"/article/{article['slug']}",
        "/tag/c%2Fc%2B%2B",
        "/tag/%C3%A9t%C3%A9",
        "/profile/writer",
    ):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.headers["Content-Type"].startswith("text/html")
        page = await resp.text()
        assert_inert(page)
        assert "Title &lt;script&gt;" in page, path
    page = await (await client.get(f"/article/{article['slug']}")).text()
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page  # the comment, escaped
    assert '<link rel="canonical" href="http://blog.test/article/' in page


async def test_missing_pages_are_html_404s(client: Client) -> None:
    for path in ("/article/nope", "/tag/nope", "/profile/nope", "/?page=2", "/?page=x"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert resp.headers["Content-Type"].startswith("text/html")


async def test_pages_revalidate_with_etag(client: Client) -> None:
    token = await register(client)
    article = await post_article(client, token, "Conditional")
    path = f"/article/{article['slug']}"
    resp = await client.get(path)
    etag = resp.headers["ETag"]
    assert resp.headers["Cache-Control"].startswith("public, max-age=")
    resp = await client.get(path, headers={"If-None-Match": etag})
    assert resp.status == 304 and resp.headers["ETag"] == etag
    await client.put(
        path.replace("/article/", "/api/articles/"), json={"article": {"body": "new"}}, headers=auth(token)
    )
    resp = await client.get(path, headers={"If-None-Match": etag})
    assert resp.status == 200 and "new" in await resp.text()


async def test_sitemap_and_feed(client: Client) -> None:
    token = await register(client, "feeder")
    slugs = [(await post_article(client, token, f"Feed {i}", tagList=["news"]))["slug"] for i in range(3)]
    resp = await client.get("/sitemap.xml")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/xml")
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    locs = [loc.text for loc in ET.fromstring(await resp.read()).findall("s:url/s:loc", ns)]
    assert "http://blog.test/" in locs and "http://blog.test/tag/news" in locs
    assert "http://blog.test/profile/feeder" in locs
    assert {f"http://blog.test/article/{slug}" for slug in slugs} <= set(locs)

    resp = await client.get("/feed.atom")
    assert resp.headers["Content-Type"].startswith("application/atom+xml")
    atom = {"a": "http://www.w3.org/2005/Atom"}
    feed = ET.fromstring(await resp.read())
    entries = feed.findall("a:entry", atom)
    assert [e.findtext("a:title", namespaces=atom) for e in entries] == ["Feed 2", "Feed 1", "Feed 0"]
    content = entries[0].find("a:content", atom)
    assert content is not None and content.get("type") == "html" and "<h1>" in (content.text or "")


async def test_a_crawl_finds_no_broken_links_and_warms_the_cache(client: Client) -> None:
    tokens = [await register(client, f"crawl{i}") for i in range(2)]
    for i in range(23):  # more than a page of articles
        await post_article(client, tokens[i % 2], f"Crawled {i}", tagList=[f"t{i % 3}", "all"])
    result = await crawl(str(client.make_url("/")), max_pages=500, concurrency=8)
    assert result.broken_links() == []
    assert not result.truncated
    fetched = set(result.pages)
    assert any(url.endswith("/?page=2") for url in fetched)
    assert any("/api/articles/crawled-" in url for url in fetched)  # JSON twins warmed too

    loads = REGISTRY.get_sample_value("blog_db_queries_total", {"query": "article_by_slug"}) or 0.0
    for i in range(23):
        assert (await client.get(f"/api/articles/crawled-{i}")).status == 200
        assert (await client.get(f"/article/crawled-{i}")).status == 200
    after = REGISTRY.get_sample_value("blog_db_queries_total", {"query": "article_by_slug"}) or 0.0
    assert after == loads  # every read was a cache hit
