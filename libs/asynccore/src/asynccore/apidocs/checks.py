"""Check a served docs page the way a browser loads it: for the services' tests and the stack tests.

:func:`check_docs` fetches the page, every script, style sheet and icon it references, every URL
those style sheets reference, and the OpenAPI document the page names, and lists what is wrong: a
reference to another origin, inline script or style (the page's CSP would refuse it), a missing
asset, a wrong content type, a document that is not OpenAPI 3.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

__all__ = ["DocsReport", "Page", "check_docs", "parse_page"]

TIMEOUT = aiohttp.ClientTimeout(total=10)
# What a browser accepts for each kind of asset (the parameters, such as charset, aside).
ACCEPTED_TYPES = {
    ".js": {"application/javascript", "text/javascript"},
    ".css": {"text/css"},
    ".png": {"image/png"},
}
CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)""")


class Page(HTMLParser):
    """What loading the page would fetch or run."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []  # script src, link href, img src
        self.openapi_url: str | None = None
        self.inline: list[str] = []  # script or style the CSP would refuse
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        for name in values:
            if name.startswith("on") or name == "style":
                self.inline.append(f"{tag} {name}= attribute")
        if tag == "style":
            self.inline.append("style element")
        if tag == "script":
            self._in_script = True
            if "src" not in values:
                self.inline.append("script element without src")
        for name in ("src", "href"):
            if name in values and tag in ("script", "link", "img"):
                self.references.append(values[name])
        if "data-openapi-url" in values:
            self.openapi_url = values["data-openapi-url"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("script text")


def parse_page(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


@dataclass
class DocsReport:
    page_url: str
    assets: dict[str, str] = field(default_factory=dict)  # URL -> the content type it answered
    openapi_url: str | None = None
    document: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def _same_origin(base: str, reference: str) -> bool:
    target, origin = urlsplit(urljoin(base, reference)), urlsplit(base)
    return (target.scheme, target.netloc) == (origin.scheme, origin.netloc)


async def check_docs(session: aiohttp.ClientSession, base_url: str, docs_path: str) -> DocsReport:
    """Load ``base_url + docs_path`` and everything it references; ``report.problems`` lists what a
    browser would not get (an empty list: the page works, from this origin alone). ``base_url`` may
    be ``""`` for a session made with a base URL."""
    report = DocsReport(base_url.rstrip("/") + docs_path)
    async with session.get(report.page_url, timeout=TIMEOUT) as resp:
        text = await resp.text()
        status, content_type, headers = resp.status, resp.content_type, resp.headers.copy()
    if status != 200 or content_type != "text/html":
        report.problems.append(f"page: {status} {content_type}")
        return report
    report.problems += _header_problems(headers)
    page = parse_page(text)
    report.problems += [f"page: inline {what}" for what in page.inline]
    await _check_assets(session, report, page.references)
    report.openapi_url = page.openapi_url
    await _check_openapi(session, report)
    return report


def _header_problems(headers: Mapping[str, str]) -> list[str]:
    """What the page's own headers leave open: scripts from elsewhere, content sniffing."""
    problems = []
    csp = headers.get("Content-Security-Policy")
    if csp is None or "script-src 'self'" not in csp or "unsafe-" in csp:
        problems.append(f"page: CSP {csp!r} does not limit scripts to this origin")
    if headers.get("X-Content-Type-Options") != "nosniff":
        problems.append("page: no X-Content-Type-Options: nosniff")
    return problems


async def _check_assets(session: aiohttp.ClientSession, report: DocsReport, references: list[str]) -> None:
    """Fetch every asset the page references (and what its style sheets reference), once each."""
    pending = list(references)
    seen: set[str] = set()
    while pending:
        reference = pending.pop(0)
        url = urljoin(report.page_url, reference)
        if url in seen:
            continue
        seen.add(url)
        if not _same_origin(report.page_url, reference):
            report.problems.append(f"{reference}: not on the page's origin")
            continue
        suffix = PurePosixPath(urlsplit(url).path).suffix
        async with session.get(url, timeout=TIMEOUT) as resp:
            body = await resp.read()
            report.assets[url] = resp.content_type
            if resp.status != 200 or not body:
                report.problems.append(f"{reference}: {resp.status}, {len(body)} bytes")
            elif resp.content_type not in ACCEPTED_TYPES.get(suffix, set()):
                report.problems.append(
                    f"{reference}: content type {resp.content_type} for a {suffix or '?'} file"
                )
        if suffix == ".css":
            for _, found in CSS_URL.findall(body.decode("utf-8", "replace")):
                if not found.startswith(("data:", "#")):
                    pending.append(urljoin(url, found))


async def _check_openapi(session: aiohttp.ClientSession, report: DocsReport) -> None:
    """The OpenAPI document the page names: on its origin, served as JSON, and OpenAPI 3."""
    named = report.openapi_url
    if named is None:
        report.problems.append("page: names no OpenAPI document (data-openapi-url)")
        return
    if not _same_origin(report.page_url, named):
        report.problems.append(f"{named}: the document is not on the page's origin")
        return
    async with session.get(urljoin(report.page_url, named), timeout=TIMEOUT) as resp:
        if resp.status != 200 or resp.content_type != "application/json":
            report.problems.append(f"{named}: {resp.status} {resp.content_type}")
        else:
            report.document = await resp.json()
    document = report.document
    if document is not None and not (
        str(document.get("openapi", "")).startswith("3.") and isinstance(document.get("paths"), dict)
    ):
        report.problems.append(f"{named}: not an OpenAPI 3 document")
