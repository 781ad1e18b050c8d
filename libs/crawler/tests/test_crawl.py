"""The crawler against real local aiohttp sites on free ports: loops, broken and slow pages, bounds.

Each site counts the requests it serves per path and the most it ever had in flight, so the tests check
what the crawler actually did on the wire, not what it reports about itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asynccore.testing import free_port, wait_until
from crawler import CrawlResult, PageResult, crawl
from crawler.cli import render_text
from crawler.links import extract_links, normalize_url

HANG_LIMIT_S = 30.0  # a hanging page is released at teardown; this only bounds a broken teardown


@dataclass
class Page:
    links: list[str] = field(default_factory=list)
    status: int = 200
    delay_s: float = 0.0  # before the response starts
    hang: bool = False  # never answers (until teardown)
    hang_body: bool = False  # sends headers and a first chunk, then never finishes the body
    content_type: str = "text/html"
    location: str | None = None
    padding: int = 0  # bytes of filler before the links


@dataclass
class Site:
    server: TestServer
    pages: dict[str, Page]
    hits: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/") -> str:
        return str(self.server.make_url(path))

    def path_of(self, url: str) -> str:
        assert url.startswith(self.url("/")), url
        return url[len(self.url("/")) - 1 :]


def _html(page: Page) -> str:
    anchors = "".join(f'<a href="{href}">link</a>\n' for href in page.links)
    return f"<html><body>{'x' * page.padding}{anchors}</body></html>"


async def _serve(site: Site, request: web.Request) -> web.StreamResponse:
    page = site.pages.get(request.path)
    if page is None:
        raise web.HTTPNotFound()
    if page.delay_s:
        await asyncio.sleep(page.delay_s)
    if page.hang:
        await asyncio.wait_for(site.release.wait(), HANG_LIMIT_S)
    if page.location is not None:
        return web.Response(status=page.status, headers={"Location": page.location})
    if page.hang_body:
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        await resp.write(b"<html><body>" + b"x" * 1024)
        await asyncio.wait_for(site.release.wait(), HANG_LIMIT_S)
        return resp
    if page.content_type == "text/html":
        return web.Response(status=page.status, text=_html(page), content_type="text/html")
    return web.Response(status=page.status, text=_html(page), content_type=page.content_type)


SiteFactory = Callable[[dict[str, Page]], Awaitable[Site]]


@pytest.fixture
async def make_site() -> AsyncIterator[SiteFactory]:
    sites: list[Site] = []

    async def make(pages: dict[str, Page]) -> Site:
        site: Site  # bound below, before the server takes its first request

        @web.middleware
        async def track(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            site.hits[request.path_qs] += 1
            site.in_flight += 1
            site.max_in_flight = max(site.max_in_flight, site.in_flight)
            try:
                return await handler(request)
            finally:
                site.in_flight -= 1

        async def serve(request: web.Request) -> web.StreamResponse:
            return await _serve(site, request)

        app = web.Application(middlewares=[track])
        app.router.add_get("/{tail:.*}", serve)
        site = Site(TestServer(app, host="127.0.0.1", port=0), pages)
        await site.server.start_server()
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.release.set()
        await site.server.close()


def _crawl_workers() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("crawler-worker")]


def _by_path(site: Site, result: CrawlResult) -> dict[str, PageResult]:
    return {site.path_of(url): page for url, page in result.pages.items() if url.startswith(site.url("/"))}


# --- links: plain functions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("href", "base", "expected"),
    [
        ("HTTP://Example.COM:80/a#frag", None, "http://example.com/a"),
        ("https://h:443", None, "https://h/"),
        ("http://h:8080", None, "http://h:8080/"),
        ("http://h/p?b=2&a=1&a=0", None, "http://h/p?a=1&a=0&b=2"),
        ("http://h/a/./b/../c", None, "http://h/a/c"),
        ("http://h/a/b/..", None, "http://h/a/"),
        ("http://[::1]:80/", None, "http://[::1]/"),
        ("../x?z=1#f", "http://h/a/b/c", "http://h/a/x?z=1"),
        ("b", "http://h/a/", "http://h/a/b"),
        ("#top", "http://h/a?q=1", "http://h/a?q=1"),
        ("//Other.org/p", "https://h/", "https://other.org/p"),
        ("  /spaced  ", "http://h/x", "http://h/spaced"),
        ("mailto:someone@example.com", "http://h/", None),
        ("javascript:void(0)", "http://h/", None),
        ("tel:+15551234", "http://h/", None),
        ("ftp://h/file", None, None),
        ("", "http://h/", None),
        ("http://[::1/", None, None),
        ("http://h:99999/", None, None),
    ],
)
def test_normalize_url(href: str, base: str | None, expected: str | None) -> None:
    assert normalize_url(href, base) == expected


def test_extract_links_reads_anchors_areas_paging_links_and_base() -> None:
    html = """
    <html><head>
      <BASE HREF="/docs/">
      <link rel="stylesheet" href="/style.css">
      <link rel="Next" href="page2">
      <link rel="alternate" type="application/rss+xml" href="/feed">
    </head><body>
      <A HREF="intro#part">intro</A> <a href="intro">again</a>
      <a href="mailto:x@example.com">mail</a> <a>no href</a> <a href="">empty</a>
      <map><area href="/map-target"/></map>
      <a href="https://elsewhere.example/x">off</a>
    </body></html>
    """
    assert extract_links(html, "http://h/start") == [
        "http://h/docs/page2",
        "http://h/feed",
        "http://h/docs/intro",
        "http://h/map-target",
        "https://elsewhere.example/x",
    ]


# --- the crawl against real sites -------------------------------------------------------------------


async def _broken_site(make_site: SiteFactory) -> tuple[Site, Site]:
    """A site with loops, URL variants, broken/slow/redirected/non-HTML pages, and an off-host link."""
    other = await make_site({"/": Page(links=["/more"]), "/more": Page()})
    site = await make_site({})
    site.pages.update(
        {
            "/": Page(
                links=[
                    "/a",
                    "/a#section",  # fragment: same page
                    f"HTTP://127.0.0.1:{site.server.port}/b",  # scheme case: same as "/b"
                    "/q?b=2&a=1",
                    "/q?a=1&b=2#x",  # same as the previous once normalised
                    "/missing",
                    "/boom",
                    "/slow",
                    "/slow-body",
                    "/old",
                    "/notes.txt",
                    "/big",
                    other.url("/"),
                    "mailto:ops@example.com",
                    "javascript:void(0)",
                    "tel:+15551234",
                ]
            ),
            "/a": Page(links=["/b", "./a"]),  # loop A -> B -> A, and a self link
            "/b": Page(links=["a", "/"]),
            "/q": Page(),
            "/boom": Page(status=500),
            "/slow": Page(hang=True),
            "/slow-body": Page(hang_body=True),
            "/old": Page(status=301, location="/a#moved"),
            "/notes.txt": Page(links=["/never-from-text"], content_type="text/plain"),
            "/big": Page(links=["/beyond-body-limit"], padding=200_000),
        }
    )
    return site, other


async def test_crawl_reports_statuses_broken_links_and_fetches_each_url_once(make_site: SiteFactory) -> None:
    site, other = await _broken_site(make_site)

    result = await crawl(site.url("/"), concurrency=4, timeout_s=0.5, max_body_bytes=100_000)

    pages = _by_path(site, result)
    fetched = {"/", "/a", "/b", "/q?a=1&b=2", "/old", "/notes.txt", "/big"}
    assert set(pages) == fetched | {"/missing", "/boom", "/slow", "/slow-body"}
    assert set(result.pages) == {site.url(path) for path in pages}  # nothing off-host
    assert other.hits == Counter()
    assert all(n == 1 for n in site.hits.values()), site.hits
    assert set(site.hits) == set(pages)  # /never-from-text, /beyond-body-limit were never requested

    assert pages["/"].status == 200 and pages["/old"].status == 301
    assert pages["/missing"].status == 404 and pages["/boom"].status == 500
    for slow in ("/slow", "/slow-body"):
        assert pages[slow].status is None and pages[slow].error == "timeout", pages[slow]
        assert 0.45 <= pages[slow].elapsed_s < 5
    assert result.status_counts() == {"200": 6, "301": 1, "404": 1, "500": 1, "timeout": 2}
    assert not result.truncated

    broken = {site.path_of(link.url): link for link in result.broken_links()}
    assert set(broken) == {"/missing", "/boom", "/slow", "/slow-body"}
    assert all(link.referrers == (site.url("/"),) for link in broken.values())
    assert result.referrers[site.url("/a")] == {
        site.url("/"),
        site.url("/a"),
        site.url("/b"),
        site.url("/old"),
    }

    summary = result.summary()
    assert summary["pages_fetched"] == 11
    assert [link["url"] for link in summary["broken_links"]] == sorted(site.url(p) for p in broken)
    assert 0 < summary["fetch_time_p50_s"] <= summary["fetch_time_p95_s"] <= summary["total_time_s"]
    assert summary["fetch_time_p95_s"] >= 0.45  # the two timeouts are the slowest 2 of 11
    assert _crawl_workers() == []


async def test_all_hosts_follows_other_hosts_and_reports_connection_errors(make_site: SiteFactory) -> None:
    other = await make_site({"/": Page(links=["/more"]), "/more": Page()})
    dead = f"http://127.0.0.1:{free_port()}/gone"  # nobody listens there
    site = await make_site({"/": Page(links=[other.url("/"), dead])})

    result = await crawl(site.url("/"), all_hosts=True, concurrency=2, timeout_s=2)

    assert other.hits == Counter({"/": 1, "/more": 1})
    assert result.pages[dead].error == "connection"
    assert result.pages[dead].detail
    assert [link.url for link in result.broken_links()] == [dead]


async def test_concurrency_bound_and_each_page_once_on_a_200_page_site(make_site: SiteFactory) -> None:
    n = 200
    pages = {"/": Page(links=[f"/p/{i}" for i in range(n)])}
    for i in range(n):
        pages[f"/p/{i}"] = Page(links=[f"/p/{(i + 1) % n}", f"/p/{i * 7 % n}?x=1#f", "/"], delay_s=0.01)
    site = await make_site(pages)
    seen: list[PageResult] = []

    result = await crawl(site.url("/"), max_pages=1000, concurrency=5, on_page=seen.append)

    assert len(result.pages) == len(pages) + n  # every /p/i and /p/i?x=1, plus /
    assert all(n == 1 for n in site.hits.values()), site.hits.most_common(3)
    assert sum(site.hits.values()) == len(result.pages) == len(seen)
    assert site.max_in_flight == 5  # used, and never exceeded
    assert not result.truncated


async def test_max_pages_is_exact(make_site: SiteFactory) -> None:
    n = 200
    pages = {"/": Page(links=[f"/p/{i}" for i in range(n)])}
    pages.update({f"/p/{i}": Page(links=[f"/p/{(i + 1) % n}"], delay_s=0.005) for i in range(n)})
    site = await make_site(pages)

    result = await crawl(site.url("/"), max_pages=50, concurrency=8)

    assert len(result.pages) == 50
    assert sum(site.hits.values()) == 50
    assert result.truncated
    assert result.summary()["pages_fetched"] == 50


async def test_bounds_hold_with_a_session_passed_in(make_site: SiteFactory) -> None:
    """A caller's session has its own (large) connector limits: the crawler must bound itself."""
    n = 60
    pages = {"/": Page(links=[f"/p/{i}" for i in range(n)])}
    pages.update({f"/p/{i}": Page(delay_s=0.02) for i in range(n)})
    per_host_site = await make_site(pages)
    total_site = await make_site(pages)

    async with aiohttp.ClientSession() as session:
        await crawl(per_host_site.url("/"), concurrency=8, per_host=2, session=session)
        await crawl(total_site.url("/"), concurrency=3, session=session)
        assert not session.closed  # the caller's session is the caller's to close

    assert per_host_site.max_in_flight == 2
    assert total_site.max_in_flight == 3
    assert sum(per_host_site.hits.values()) == sum(total_site.hits.values()) == n + 1


async def test_crawl_waits_for_pages_in_flight_that_discover_more(make_site: SiteFactory) -> None:
    """While the slow pages are fetched the queue is empty; their links must still be crawled."""
    site = await make_site(
        {
            "/": Page(links=["/fast", "/slow-1"]),
            "/fast": Page(),
            "/slow-1": Page(links=["/slow-2"], delay_s=0.3),
            "/slow-2": Page(links=["/last"], delay_s=0.3),
            "/last": Page(),
        }
    )

    result = await crawl(site.url("/"), concurrency=4, timeout_s=5)

    assert set(_by_path(site, result)) == {"/", "/fast", "/slow-1", "/slow-2", "/last"}
    assert all(page.status == 200 for page in result.pages.values())
    assert _crawl_workers() == []


async def test_cancelling_a_crawl_cancels_its_workers(make_site: SiteFactory) -> None:
    site = await make_site({"/": Page(links=["/hang"]), "/hang": Page(hang=True)})
    task = asyncio.create_task(crawl(site.url("/"), concurrency=3, timeout_s=20))

    await wait_until(lambda: site.hits["/hang"] == 1, timeout=5, message="/hang requested")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _crawl_workers() == []


async def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="http"):
        await crawl("mailto:x@example.com")
    with pytest.raises(ValueError, match="max_pages"):
        await crawl("http://127.0.0.1/", max_pages=0)
    with pytest.raises(ValueError, match="per_host"):
        await crawl("http://127.0.0.1/", per_host=0)


def test_render_text_lists_broken_links_with_referrers() -> None:
    text = render_text(
        {
            "start_url": "http://h/",
            "pages_fetched": 3,
            "truncated": True,
            "status_counts": {"200": 2, "timeout": 1},
            "broken_links": [
                {
                    "url": "http://h/slow",
                    "status": None,
                    "error": "timeout",
                    "detail": "ServerTimeoutError",
                    "referrers": ["http://h/", "http://h/a"],
                }
            ],
            "fetch_time_p50_s": 0.012,
            "fetch_time_p95_s": 0.5,
            "total_time_s": 0.6,
        }
    )
    assert "crawled 3 pages" in text and "stopped at --max-pages" in text
    assert "p50 12.0 ms, p95 500.0 ms" in text
    assert "status: 200: 2, timeout: 1" in text
    assert "timeout (ServerTimeoutError) http://h/slow\n      <- http://h/\n      <- http://h/a" in text


# --- the CLI as a real process ----------------------------------------------------------------------


async def _run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "crawler",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_json_exits_1_on_broken_links(make_site: SiteFactory) -> None:
    site, other = await _broken_site(make_site)

    code, out, err = await _run_cli(
        site.url("/"), "--json", "--concurrency", "4", "--timeout", "0.5", "--max-body-bytes", "100000"
    )

    assert code == 1, err
    summary = json.loads(out)
    assert summary["pages_fetched"] == 11
    assert summary["status_counts"] == {"200": 6, "301": 1, "404": 1, "500": 1, "timeout": 2}
    assert {(site.path_of(b["url"]), b["status"], b["error"]) for b in summary["broken_links"]} == {
        ("/missing", 404, None),
        ("/boom", 500, None),
        ("/slow", None, "timeout"),
        ("/slow-body", None, "timeout"),
    }
    assert all(b["referrers"] == [site.url("/")] for b in summary["broken_links"])
    assert all(n == 1 for n in site.hits.values()) and other.hits == Counter()
    assert err == ""  # no progress bar when stderr is not a terminal


async def test_cli_exits_0_on_a_healthy_site_and_2_on_bad_arguments(make_site: SiteFactory) -> None:
    site = await make_site({"/": Page(links=["/a"]), "/a": Page(links=["/"])})

    code, out, err = await _run_cli(site.url("/"), "--max-pages", "10")
    assert code == 0, err
    assert "crawled 2 pages" in out and "broken links: 0" in out

    code, _, err = await _run_cli("mailto:x@example.com")
    assert code == 2 and "not an http(s) URL" in err
