"""What a crawl found: one record per fetched URL, who links where, and the summary derived from them.

Kept apart from the engine so callers (the CLI, the blog's cache warmer, tests) can read and report a
result without knowing how it was produced.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Literal, TypedDict

__all__ = ["BrokenLink", "CrawlResult", "CrawlSummary", "ErrorKind", "PageResult"]

ErrorKind = Literal["timeout", "connection", "protocol"]


@dataclass(frozen=True, slots=True)
class PageResult:
    """One fetch: an HTTP status, or the kind of failure that prevented one."""

    url: str
    status: int | None
    error: ErrorKind | None
    elapsed_s: float
    detail: str = ""  # the exception text of a failed request, for humans

    @property
    def outcome(self) -> str:
        """``"200"``, ``"404"``, ``"timeout"`` …: the key of the status counts."""
        return str(self.status) if self.status is not None else str(self.error)

    @property
    def broken(self) -> bool:
        return self.status is None or self.status >= 400


@dataclass(frozen=True, slots=True)
class BrokenLink:
    url: str
    page: PageResult
    referrers: tuple[str, ...]  # the pages that link to it, sorted; empty for the start URL


class BrokenLinkJson(TypedDict):
    url: str
    status: int | None
    error: ErrorKind | None
    detail: str
    referrers: list[str]


class CrawlSummary(TypedDict):
    start_url: str
    pages_fetched: int
    truncated: bool  # more pages were reachable than max_pages allowed
    status_counts: dict[str, int]
    broken_links: list[BrokenLinkJson]
    fetch_time_p50_s: float
    fetch_time_p95_s: float
    total_time_s: float


@dataclass(frozen=True, slots=True)
class CrawlResult:
    start_url: str
    pages: dict[str, PageResult]  # by normalised URL, in the order fetches finished
    referrers: dict[str, frozenset[str]]  # normalised URL -> the fetched pages that link to it
    total_s: float
    truncated: bool

    def broken_links(self) -> list[BrokenLink]:
        return [
            BrokenLink(url, page, tuple(sorted(self.referrers.get(url, ()))))
            for url, page in sorted(self.pages.items())
            if page.broken
        ]

    def status_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(page.outcome for page in self.pages.values()).items()))

    def fetch_time_percentile(self, percent: float) -> float:
        """Nearest-rank percentile of per-URL fetch times, failures included (0.0 for no pages)."""
        times = sorted(page.elapsed_s for page in self.pages.values())
        if not times:
            return 0.0
        rank = max(math.ceil(percent / 100 * len(times)), 1)
        return times[rank - 1]

    def summary(self) -> CrawlSummary:
        return {
            "start_url": self.start_url,
            "pages_fetched": len(self.pages),
            "truncated": self.truncated,
            "status_counts": self.status_counts(),
            "broken_links": [
                {
                    "url": link.url,
                    "status": link.page.status,
                    "error": link.page.error,
                    "detail": link.page.detail,
                    "referrers": list(link.referrers),
                }
                for link in self.broken_links()
            ],
            "fetch_time_p50_s": round(self.fetch_time_percentile(50), 4),
            "fetch_time_p95_s": round(self.fetch_time_percentile(95), 4),
            "total_time_s": round(self.total_s, 4),
        }
