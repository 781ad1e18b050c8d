"""nginx's ``stub_status`` page as Prometheus metrics, for the local stack.

Prometheus cannot read stub_status's plain-text page, so this serves it as ``/metrics`` under the
names the official nginx-prometheus-exporter uses (``nginx_up``, ``nginx_connections_*``,
``nginx_http_requests_total``): dashboards and alerts work the same whichever exporter runs.

    uv run python deploy/local/nginx_exporter.py --status-url http://127.0.0.1:8089/nginx_status --port 9113

Each scrape reads stub_status once (no background polling); when nginx does not answer in time,
``nginx_up`` is 0 and the other series are absent, as with the official exporter.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

STATUS_URL = web.AppKey("status_url", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
SCRAPE_TIMEOUT_S = 2.0

# Active connections: 2
# server accepts handled requests
#  10 10 25
# Reading: 0 Writing: 1 Waiting: 1
_STUB_STATUS = re.compile(
    r"Active connections:\s*(?P<active>\d+)\s+"
    r"server accepts handled requests\s+(?P<accepted>\d+)\s+(?P<handled>\d+)\s+(?P<requests>\d+)\s+"
    r"Reading:\s*(?P<reading>\d+)\s+Writing:\s*(?P<writing>\d+)\s+Waiting:\s*(?P<waiting>\d+)"
)

# name, type, help, stub_status field
_METRICS = (
    ("nginx_connections_accepted", "counter", "Accepted client connections", "accepted"),
    ("nginx_connections_active", "gauge", "Active client connections", "active"),
    ("nginx_connections_handled", "counter", "Handled client connections", "handled"),
    (
        "nginx_connections_reading",
        "gauge",
        "Connections where nginx is reading the request header",
        "reading",
    ),
    ("nginx_connections_waiting", "gauge", "Idle client connections", "waiting"),
    ("nginx_connections_writing", "gauge", "Connections where nginx is writing the response", "writing"),
    ("nginx_http_requests_total", "counter", "Total http requests", "requests"),
)


def parse_stub_status(text: str) -> dict[str, int]:
    """The counters of a stub_status page; ``ValueError`` when the page is not one."""
    found = _STUB_STATUS.search(text)
    if found is None:
        raise ValueError(f"not a stub_status page: {text[:80]!r}")
    return {field: int(value) for field, value in found.groupdict().items()}


def render(status: dict[str, int] | None) -> str:
    """Prometheus text exposition; ``None`` means nginx did not answer."""
    lines = ["# HELP nginx_up Whether the last read of stub_status succeeded", "# TYPE nginx_up gauge"]
    lines.append(f"nginx_up {0 if status is None else 1}")
    if status is not None:
        for name, kind, help_text, field in _METRICS:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {status[field]}"]
    return "\n".join(lines) + "\n"


async def read_status(session: aiohttp.ClientSession, url: str) -> dict[str, int] | None:
    try:
        async with session.get(url) as resp:
            resp.raise_for_status()
            return parse_stub_status(await resp.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def metrics(request: web.Request) -> web.Response:
    status = await read_status(request.app[SESSION], request.app[STATUS_URL])
    return web.Response(text=render(status), content_type="text/plain", charset="utf-8")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": "nginx-exporter"})


async def session_ctx(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        app[SESSION] = session
        yield


def create_app(status_url: str) -> web.Application:
    app = web.Application()
    app[STATUS_URL] = status_url
    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--status-url", default="http://127.0.0.1:8089/nginx_status")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9113)
    args = parser.parse_args()
    web.run_app(
        create_app(args.status_url),
        host=args.host,
        port=args.port,
        access_log=None,
        print=lambda *_: print(f"nginx exporter on {args.host}:{args.port}", flush=True),
    )


if __name__ == "__main__":
    main()
