"""The crawl engine: N workers over one queue, ending when no page is queued *or* in flight.

"Queue empty" is not "done": a page still being fetched may yet discover more links. Each worker
marks a URL done (``task_done``) only after its links are queued, so ``queue.join()`` returns exactly
when the frontier is empty and nothing is in flight; then the workers are cancelled.

``max_pages`` is a budget on *admitted* URLs: a URL enters the queue only while fewer than
``max_pages`` have been admitted, and each admitted URL is fetched once. So the crawl never fetches
more than ``max_pages`` pages, and the queue (its ``maxsize`` is the budget) never blocks a worker —
a smaller bound would let every worker block on ``put`` with nobody left to ``get``.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable

import aiohttp

from crawler.links import extract_links, host_of, normalize_url
from crawler.result import CrawlResult, ErrorKind, PageResult

__all__ = ["DEFAULT_MAX_BODY_BYTES", "crawl"]

DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {
    "User-Agent": "asyncstack-crawler/0.1",
    "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5",
}
_CHUNK_BYTES = 64 * 1024


async def crawl(
    start_url: str,
    *,
    max_pages: int = 100,
    concurrency: int = 8,
    per_host: int | None = None,
    timeout_s: float = 10.0,
    all_hosts: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    session: aiohttp.ClientSession | None = None,
    on_page: Callable[[PageResult], None] | None = None,
) -> CrawlResult:
    """Crawl from ``start_url``, fetching at most ``max_pages`` pages, ``concurrency`` at a time.

    Links are followed on the start URL's host only unless ``all_hosts``; at most ``per_host``
    (default: ``concurrency``) requests run against one host at once. Each request, body included,
    must finish within ``timeout_s``. Redirects are not followed blindly: the ``Location`` is a link
    like any other (deduplicated, same-host rule, counted against ``max_pages``).

    Pass the app's ``session`` to reuse its connection pool and headers; otherwise one is opened
    (with connector limits matching ``concurrency``/``per_host``) and closed for this crawl.
    ``on_page`` is called with each record as it completes (progress bars, logs).
    """
    start = normalize_url(start_url)
    if start is None:
        raise ValueError(f"not an http(s) URL: {start_url!r}")
    per_host = concurrency if per_host is None else per_host
    for name, value in (
        ("max_pages", max_pages),
        ("concurrency", concurrency),
        ("per_host", per_host),
        ("max_body_bytes", max_body_bytes),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")

    def engine(client: aiohttp.ClientSession) -> _Crawl:
        return _Crawl(
            start,
            client,
            max_pages=max_pages,
            concurrency=concurrency,
            per_host=per_host,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            all_hosts=all_hosts,
            max_body_bytes=max_body_bytes,
            on_page=on_page,
        )

    if session is not None:
        return await engine(session).run()
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=per_host)
    async with aiohttp.ClientSession(connector=connector) as own:
        return await engine(own).run()


class _Crawl:
    def __init__(
        self,
        start: str,
        session: aiohttp.ClientSession,
        *,
        max_pages: int,
        concurrency: int,
        per_host: int,
        timeout: aiohttp.ClientTimeout,
        all_hosts: bool,
        max_body_bytes: int,
        on_page: Callable[[PageResult], None] | None,
    ) -> None:
        self.start = start
        self.start_host = host_of(start)
        self.session = session
        self.max_pages = max_pages
        self.concurrency = concurrency
        self.timeout = timeout
        self.all_hosts = all_hosts
        self.max_body_bytes = max_body_bytes
        self.on_page = on_page
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=max_pages)
        # Keys are every admitted URL (the dedup set); values the fetched pages linking to it.
        self.referrers: dict[str, set[str]] = {}
        self.pages: dict[str, PageResult] = {}
        self.host_slots: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(per_host)
        )
        self.truncated = False

    async def run(self) -> CrawlResult:
        started = time.perf_counter()
        self.offer(self.start, referrer=None)
        # A worker that raises (a bug, not a failed fetch) cancels the join and the other workers.
        async with asyncio.TaskGroup() as group:
            workers = [
                group.create_task(self.worker(), name=f"crawler-worker-{i}") for i in range(self.concurrency)
            ]
            await self.queue.join()
            for worker in workers:
                worker.cancel()
        return CrawlResult(
            start_url=self.start,
            pages=self.pages,
            referrers={url: frozenset(refs) for url, refs in self.referrers.items() if refs},
            total_s=time.perf_counter() - started,
            truncated=self.truncated,
        )

    def offer(self, url: str, referrer: str | None) -> None:
        """Queue ``url`` unless it was seen, is off-host, or the page budget is spent."""
        if (refs := self.referrers.get(url)) is not None:
            if referrer is not None:
                refs.add(referrer)
            return
        if not self.all_hosts and host_of(url) != self.start_host:
            return
        if len(self.referrers) >= self.max_pages:
            self.truncated = True
            return
        self.referrers[url] = {referrer} if referrer is not None else set()
        self.queue.put_nowait(url)  # never full: see the module docstring

    async def worker(self) -> None:
        while True:
            url = await self.queue.get()
            try:
                # The worker waits for its host's slot: simple, and fair enough for the
                # mostly-one-host crawls this is for (a busy host can hold up other hosts' URLs).
                async with self.host_slots[host_of(url)]:
                    page, links = await self.fetch(url)
                self.pages[url] = page
                for link in links:
                    self.offer(link, referrer=url)
                if self.on_page is not None:
                    self.on_page(page)
            finally:
                self.queue.task_done()  # only now: the links above are already queued

    async def fetch(self, url: str) -> tuple[PageResult, list[str]]:
        """One GET: its record and the links it points to (HTML bodies and redirects only)."""
        started = time.perf_counter()
        body: bytes | None = None
        charset: str | None = None
        try:
            async with self.session.get(
                url, allow_redirects=False, timeout=self.timeout, headers=_HEADERS
            ) as resp:
                status = resp.status
                location = resp.headers.get(aiohttp.hdrs.LOCATION) if status in _REDIRECTS else None
                if 200 <= status < 300 and resp.content_type in _HTML_TYPES:
                    body = await _read_prefix(resp.content, self.max_body_bytes)
                    charset = resp.charset
        except TimeoutError as exc:
            return _failed(url, "timeout", exc, started), []
        except aiohttp.ClientConnectionError as exc:
            return _failed(url, "connection", exc, started), []
        except aiohttp.ClientError as exc:
            return _failed(url, "protocol", exc, started), []
        page = PageResult(url, status, None, time.perf_counter() - started)
        if location is not None:
            target = normalize_url(location, base=url)
            return page, [target] if target else []
        if body is not None:
            return page, extract_links(_decode(body, charset), url)
        return page, []


async def _read_prefix(content: aiohttp.StreamReader, limit: int) -> bytes:
    """At most ``limit`` bytes of the body: a huge page costs bounded memory and parse time."""
    body = bytearray()
    async for chunk in content.iter_chunked(_CHUNK_BYTES):
        body += chunk
        if len(body) >= limit:
            break
    return bytes(body[:limit])


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace")


def _failed(url: str, kind: ErrorKind, exc: BaseException, started: float) -> PageResult:
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return PageResult(url, None, kind, time.perf_counter() - started, detail)
