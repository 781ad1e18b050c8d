"""``python -m blog.warm --base-url URL``: crawl the site so every page and its API twin is cached.

Pages link their JSON alternates (``<link rel="alternate" type="application/json">``), so one crawl
fills the page cache and the API cache alike, and doubles as a link check: exit status 1 if any link
is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from crawler import CrawlResult, crawl
from crawler.cli import render_text

__all__ = ["main", "warm"]


async def warm(base_url: str, *, max_pages: int = 5000, concurrency: int = 8) -> CrawlResult:
    return await crawl(base_url.rstrip("/") + "/", max_pages=max_pages, concurrency=concurrency)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blog.warm", description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8080", help="where the site is served")
    parser.add_argument("--max-pages", type=int, default=5000, help="fetch at most N pages")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at most")
    args = parser.parse_args(argv)
    result = asyncio.run(warm(args.base_url, max_pages=args.max_pages, concurrency=args.concurrency))
    print(render_text(result.summary()))
    return 1 if result.broken_links() else 0


if __name__ == "__main__":
    sys.exit(main())
