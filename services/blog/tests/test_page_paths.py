"""Paths a person types get the site's HTML 404 page; API paths keep JSON; article pages' headings.

The rule (blog/site.py): a GET or HEAD outside /api/ is a page request, answered in HTML; /api/
unknowns are JSON whatever the client accepts, and so is a write to a path that does not exist.
"""

from __future__ import annotations

from html.parser import HTMLParser

from blog_testing import Client, post_article, register

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


class _Headings(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.tags.append(tag)


def headings(page: str) -> list[str]:
    parsed = _Headings()
    parsed.feed(page)
    return parsed.tags


async def test_paths_a_person_types_get_the_html_404_page(client: Client) -> None:
    for path in ("/login", "/editor", "/register", "/settings/", "/no/such/page", "/api", "/article"):
        for headers in (BROWSER, {}):  # the path decides, not the Accept header
            resp = await client.get(path, headers=headers)
            assert resp.status == 404, path
            assert resp.headers["Content-Type"].startswith("text/html"), path
            assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
            page = await resp.text()
            assert "<h1>Not found</h1>" in page and '<a href="/">' in page, path
    resp = await client.head("/login")
    assert resp.status == 404 and resp.headers["Content-Type"].startswith("text/html")


async def test_api_unknowns_stay_json_even_for_a_browser(client: Client) -> None:
    for path in ("/api/nothing", "/api/articles/x/y/z", "/api/login"):
        resp = await client.get(path, headers=BROWSER)
        # 404, or 405 while the CORS preflight route (OPTIONS /api/{tail}) counts as the path's one method.
        assert resp.status in (404, 405) and resp.content_type == "application/json", path
        assert "errors" in await resp.json()
        assert resp.headers["Access-Control-Allow-Origin"] == "*"  # CORS on API errors, as before


async def test_writes_and_wrong_methods_are_json(client: Client) -> None:
    resp = await client.post("/login", json={})
    assert resp.status == 404 and resp.content_type == "application/json"
    assert await resp.json() == {"errors": {"path": ["Not Found"]}}
    resp = await client.post("/article/some-slug")  # the path exists, for GET only
    assert resp.status == 405 and resp.content_type == "application/json"
    assert set(resp.headers["Allow"].split(",")) >= {"GET", "HEAD"}
    resp = await client.delete("/")
    assert resp.status == 405 and "GET" in resp.headers["Allow"]


async def test_the_known_routes_still_answer(client: Client) -> None:
    for path in ("/", "/robots.txt", "/static/site.css", "/healthz", "/api/tags", "/api/docs"):
        assert (await client.get(path)).status == 200, path


async def test_an_article_page_has_exactly_one_h1(client: Client) -> None:
    token = await register(client)
    body = "# Part one\n\ntext\n\nPart two\n========\n\n## Detail\n\n###### Deepest\n\n<h1>raw</h1>"
    article = await post_article(client, token, "One title", body=body)
    page = await (await client.get(f"/article/{article['slug']}")).text()
    assert headings(page) == ["h1", "h2", "h2", "h3", "h6", "h2"]  # title, body (one down), Comments
    assert "<h1>One title</h1>" in page and "<h2>Part one</h2>" in page and "&lt;h1&gt;raw" in page
