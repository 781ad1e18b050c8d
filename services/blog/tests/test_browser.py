"""The blog's own pages in a real browser: a real blog process with seeded data, Chromium driving it.

The browser side is ``services/blog/browser/pages.test.js`` (playwright-core + Debian's ``chromium``,
under ``node --test``); this test starts the blog, seeds it through the public API, runs that file
against it and fails with its output when it fails. Nothing is skipped: without node, ``npm ci`` or
Chromium the test fails and says which is missing. Failing browser tests leave screenshots in
``services/blog/browser/test-output/``. ``HOME_SCREENSHOT=<path>`` also saves the home page there.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from blog_testing import REDIS_URL

from asynccore.testing import ServiceProcess, free_port

BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
TEST_FILE = BROWSER_DIR / "pages.test.js"
OUTPUT_DIR = BROWSER_DIR / "test-output"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PAGE_SIZE = 3
BROWSER_TESTS_TIMEOUT_S = 180

HOSTILE_TEXT = "<script>window.pwned = 1</script>"
RICH_BODY = f"""\
A network call without a deadline is the slow leak of an async service: one hung peer, and every
request that touches it waits with it.

# Why a deadline

A **bounded wait** turns a hung peer into an error you can count, retry or shed.

## What to bound

- connecting
- reading the response
- waiting for a slot in a queue

```python
async with asyncio.timeout(settings.payment_timeout_s):
    async with session.post(url, json=payload) as resp:
        resp.raise_for_status()
```

| wait | bound |
|---|---|
| payment call | 2 s |
| queue slot | 50 ms |

See [the asyncio documentation](https://docs.python.org/3/library/asyncio-task.html#timeouts).

Markup in a post stays text: {HOSTILE_TEXT} <img src=x onerror="window.pwned = 2">
[click me](javascript:alert(1))
"""

USERS = {
    "ada": "Writes about event loops, deadlines and the queues between them.",
    "grace": "Databases, locks and the occasional Kafka topic.",
}
# (author, title, description, tags, body) in the order they are posted: the last is the newest.
ARTICLES: list[tuple[str, str, str, list[str], str]] = [
    (
        "grace",
        "Row locks in a fixed order",
        "Two transactions, two rows, no deadlock: lock them in the same order.",
        ["mysql", "concurrency"],
        "Sort the ids, then `SELECT … FOR UPDATE` them in that order.",
    ),
    (
        "ada",
        "Backpressure in asyncio streams",
        "Why `await writer.drain()` is the line that keeps memory flat.",
        ["asyncio", "networking"],
        "A writer that never drains buffers everything the peer cannot take yet.",
    ),
    (
        "grace",
        "Exactly-once counting with Kafka and Redis",
        "Store the offsets with the aggregates, in one transaction.",
        ["kafka", "redis"],
        "A crash then neither loses nor double-counts an event.",
    ),
    (
        "ada",
        "Cache stampedes and single-flight",
        "A thousand readers miss the same key at once; one of them should load it.",
        ["redis", "caching"],
        "Single-flight in process, a `SET NX PX` fill lock across replicas.",
    ),
    (
        "ada",
        "Every await has a timeout",
        "Deadlines for connects, reads and queues, and what they buy you.",
        ["asyncio", "python"],
        RICH_BODY,
    ),
]
COMMENT = "Bounded queues too, please: a queue without a max size is a deadline in disguise."


def require_tools() -> str:
    """node's path; a failure naming every missing piece otherwise (never a skip)."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node is not on PATH (Node.js 20 or later)")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append(f"playwright-core is not installed: run `npm ci` in {BROWSER_DIR}")
    if not Path(CHROMIUM).exists():
        missing.append(
            f"no Chromium at {CHROMIUM}: apt-get install chromium (deploy/local/ensure-services does)"
        )
    if missing:
        pytest.fail("browser tests cannot run: " + "; ".join(missing), pytrace=False)
    assert node is not None
    return node


async def seed(base: str) -> dict[str, Any]:
    """Users, articles and a comment through the public API; what the browser tests should find."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url=base, timeout=timeout) as http:

        async def call(method: str, path: str, body: dict[str, Any], token: str = "") -> dict[str, Any]:
            headers = {"Authorization": f"Token {token}"} if token else {}
            async with http.request(method, path, json=body, headers=headers) as resp:
                assert resp.status in (200, 201), f"{method} {path}: {resp.status} {await resp.text()}"
                return dict(await resp.json())

        tokens = {}
        for name, bio in USERS.items():
            user = {"username": name, "email": f"{name}@example.com", "password": f"{name}-password"}
            tokens[name] = (await call("POST", "/api/users", {"user": user}))["user"]["token"]
            await call("PUT", "/api/user", {"user": {"bio": bio}}, tokens[name])
        slugs = []
        for author, title, description, tags, body in ARTICLES:
            article = {"title": title, "description": description, "body": body, "tagList": tags}
            created = await call("POST", "/api/articles", {"article": article}, tokens[author])
            slugs.append(created["article"]["slug"])
        await call(
            "POST", f"/api/articles/{slugs[-1]}/comments", {"comment": {"body": COMMENT}}, tokens["grace"]
        )

    _, rich_title, _, rich_tags, _ = ARTICLES[-1]
    return {
        "pageSize": PAGE_SIZE,
        "titles": [title for _, title, *_ in ARTICLES],
        "article": {
            "slug": slugs[-1],
            "title": rich_title,
            "bold": "bounded wait",
            "subheading": "What to bound",
            "code": "asyncio.timeout(settings.payment_timeout_s)",
            "cell": "queue slot",
            "scriptText": HOSTILE_TEXT,
        },
        "comment": COMMENT,
        "tag": rich_tags[0],
        "tagged": [title for _, title, _, tags, _ in ARTICLES if rich_tags[0] in tags],
        "author": {
            "username": "ada",
            "bio": USERS["ada"],
            "titles": [title for author, title, *_ in ARTICLES if author == "ada"],
        },
    }


async def test_pages_in_a_real_browser(database_url: str, prefix: str) -> None:
    node = require_tools()
    shutil.rmtree(OUTPUT_DIR, ignore_errors=True)  # screenshots left are this run's failures
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "BLOG_PORT": str(port),
        "BLOG_DATABASE_URL": database_url,
        "BLOG_CACHE_PREFIX": prefix,
        "REDIS_URL": REDIS_URL,
        "BLOG_PUBLIC_URL": base,
        "BLOG_PAGE_SIZE": str(PAGE_SIZE),
        "BLOG_ARGON2_TIME_COST": "1",
        "BLOG_ARGON2_MEMORY_KIB": "1024",
    }
    blog = ServiceProcess([sys.executable, "-m", "blog"], env=env, health_url=f"{base}/healthz", name="blog")
    await blog.start(timeout=30)
    try:
        seeded = await seed(base)
        browser_tests = ServiceProcess(
            [node, "--test", "--test-reporter=spec", str(TEST_FILE)],
            env={"BLOG_URL": base, "BLOG_SEED": json.dumps(seeded), "CHROMIUM_PATH": CHROMIUM},
            name="browser-tests",
        )
        started = time.monotonic()
        await browser_tests.start()
        try:
            code: int | str = await browser_tests.wait(timeout=BROWSER_TESTS_TIMEOUT_S)
        except TimeoutError:
            code = f"still running after {BROWSER_TESTS_TIMEOUT_S} s"
        finally:
            await browser_tests.stop()
        took = time.monotonic() - started
        assert code == 0, (
            f"browser tests failed ({code}, {took:.0f} s; screenshots in {OUTPUT_DIR}):\n"
            f"{browser_tests.output}\n--- blog output (tail) ---\n{blog.output[-3000:]}"
        )
    finally:
        await blog.stop()
