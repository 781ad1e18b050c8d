"""A bounded-concurrency crawler: warms caches and checks links.

From Python: ``result = await crawl(url, max_pages=..., concurrency=...)``; from a shell:
``python -m asynccore.crawl URL --max-pages N --concurrency C [--json]`` (exit 1 on broken links).
"""

from asynccore.crawl.cli import main
from asynccore.crawl.crawler import crawl
from asynccore.crawl.result import BrokenLink, CrawlResult, CrawlSummary, ErrorKind, PageResult

__all__ = ["BrokenLink", "CrawlResult", "CrawlSummary", "ErrorKind", "PageResult", "crawl", "main"]
