"""``asyncstack-crawl URL`` / ``python -m crawler URL``: crawl, report, and fail on broken links.

Exit status is 1 when any link is broken (4xx/5xx, timeout, connection error) so ``make warm`` and
link checks fail loudly; 0 otherwise; 2 for bad arguments. The progress bar goes to stderr and only
when stderr is a terminal, so ``--json`` output stays clean for pipes and CI logs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import orjson
from tqdm import tqdm

from crawler.crawler import DEFAULT_MAX_BODY_BYTES, crawl
from crawler.links import normalize_url
from crawler.result import CrawlResult, CrawlSummary

__all__ = ["main", "render_text"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncstack-crawl",
        description="Crawl a site with bounded concurrency and report broken links (exit 1 if any).",
    )
    parser.add_argument("url", help="start URL (http or https)")
    parser.add_argument("--max-pages", type=_positive_int, default=100, help="fetch at most N pages")
    parser.add_argument("--concurrency", type=_positive_int, default=8, help="requests in flight at most")
    parser.add_argument(
        "--per-host",
        type=_positive_int,
        default=None,
        help="requests in flight per host (default: concurrency)",
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=10.0, help="seconds per request, body included"
    )
    parser.add_argument("--all-hosts", action="store_true", help="follow links to other hosts too")
    parser.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="read at most this much of each HTML page",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def render_text(summary: CrawlSummary) -> str:
    """The human report: totals, status counts, then each broken link with the pages that link to it."""
    counts = ", ".join(f"{outcome}: {n}" for outcome, n in summary["status_counts"].items())
    lines = [
        f"crawled {summary['pages_fetched']} pages from {summary['start_url']} "
        f"in {summary['total_time_s']:.2f}s" + (" (stopped at --max-pages)" if summary["truncated"] else ""),
        f"fetch time p50 {summary['fetch_time_p50_s'] * 1000:.1f} ms, "
        f"p95 {summary['fetch_time_p95_s'] * 1000:.1f} ms",
        f"status: {counts}",
    ]
    broken = summary["broken_links"]
    lines.append(f"broken links: {len(broken)}")
    for link in broken:
        outcome = str(link["status"]) if link["status"] is not None else f"{link['error']} ({link['detail']})"
        lines.append(f"  {outcome} {link['url']}")
        lines.extend(f"      <- {referrer}" for referrer in link["referrers"])
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> CrawlResult:
    with tqdm(
        total=args.max_pages, unit="page", file=sys.stderr, disable=not sys.stderr.isatty(), leave=False
    ) as bar:
        return await crawl(
            args.url,
            max_pages=args.max_pages,
            concurrency=args.concurrency,
            per_host=args.per_host,
            timeout_s=args.timeout,
            all_hosts=args.all_hosts,
            max_body_bytes=args.max_body_bytes,
            on_page=lambda _page: bar.update(),
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if normalize_url(args.url) is None:
        parser.error(f"not an http(s) URL: {args.url!r}")
    try:
        result = asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 130
    summary = result.summary()
    if args.json:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render_text(summary))
    return 1 if summary["broken_links"] else 0
