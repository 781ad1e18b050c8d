"""A bounded-concurrency crawler: warms caches and checks links.

From Python: ``result = await crawl(url, max_pages=..., concurrency=...)``; from a shell:
``python -m crawler URL --max-pages N --concurrency C [--json]`` (exit 1 on broken links).
"""

from crawler.cli import main
from crawler.crawler import crawl
from crawler.result import BrokenLink, CrawlResult, CrawlSummary, ErrorKind, PageResult

__all__ = ["BrokenLink", "CrawlResult", "CrawlSummary", "ErrorKind", "PageResult", "crawl", "main"]
