"""Links out of an HTML page, and the one spelling of a URL the crawler dedups on.

Two hrefs that name the same resource must normalise to the same string, or the crawler fetches a
page twice (and a link loop never ends): scheme and host are lowercased, the default port, the
fragment and dot segments are dropped, and query parameters are sorted. Only ``http``/``https`` URLs
survive; ``mailto:``, ``javascript:``, ``tel:`` and the like are not pages.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

__all__ = ["extract_links", "host_of", "normalize_url"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# <link rel=...> values that point at another page of the same document set.
_FOLLOWED_RELS = frozenset({"alternate", "next", "prev"})


def normalize_url(href: str, base: str | None = None) -> str | None:
    """``href`` resolved against ``base`` in canonical form, or ``None`` if it is not a crawlable page."""
    href = href.strip()
    if not href:
        return None
    try:
        parts = urlsplit(urljoin(base, href) if base else href)
        port = parts.port
    except ValueError:  # bad IPv6 literal, port out of range
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return urlunsplit(
        (
            scheme,
            _netloc(parts, scheme, port),
            _remove_dot_segments(parts.path or "/"),
            _sort_query(parts.query),
            "",
        )
    )


def host_of(url: str) -> str:
    """The ``host[:port]`` of a normalised URL: what "same host" and per-host limits compare."""
    return urlsplit(url).netloc.rpartition("@")[2]


def extract_links(html: str, page_url: str) -> list[str]:
    """Normalised, deduplicated URLs of ``<a>``/``<area>`` hrefs and ``<link rel=alternate|next|prev>``.

    Relative hrefs resolve against ``<base href>`` when the page has one, else against ``page_url``.
    """
    parser = _LinkParser(page_url)
    parser.feed(html)
    parser.close()
    return list(parser.links)


def _netloc(parts: SplitResult, scheme: str, port: int | None) -> str:
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    return f"{userinfo}{at}{host}"


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 for an absolute path (``urljoin`` only does it for relative hrefs)."""
    segments = path.split("/")
    out: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")  # "/a/b/.." is the directory "/a/"
    return "/" + "/".join(out)


def _sort_query(query: str) -> str:
    """Sort by parameter name, keeping the raw encoding and the order of repeated names (``a=2&a=1``)."""
    if not query:
        return ""
    pairs = [pair for pair in query.split("&") if pair]
    return "&".join(sorted(pairs, key=lambda pair: pair.partition("=")[0]))


class _LinkParser(HTMLParser):
    def __init__(self, page_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = page_url
        self.seen_base_tag = False
        self.links: dict[str, None] = {}  # an ordered set

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value for name, value in attrs if value is not None}
        href = values.get("href")
        if href is None:
            return
        if tag == "base":
            if not self.seen_base_tag:  # only the first <base> counts
                self.seen_base_tag = True
                self.base = urljoin(self.base, href.strip())
            return
        if tag == "link" and not _FOLLOWED_RELS.intersection(values.get("rel", "").lower().split()):
            return
        if tag in ("a", "area", "link") and (url := normalize_url(href, self.base)):
            self.links[url] = None

    handle_startendtag = handle_starttag
