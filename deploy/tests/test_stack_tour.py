"""The README's ten-minute tour, run as written against a stack of its own, with its demo data.

The tour's commands are the ```sh blocks of README.md's "A ten-minute tour" whose first line is a
``# tour: <step>`` comment. They run in order in one bash (``-e``: a command that fails ends the
tour), as a reader pasting them would, with the stack's ports and run dir in place of the defaults
(8080, 9090, /tmp/asyncstack …). Every ``http://127.0.0.1:<port>/…`` address the README and the
runner's banner print must answer 200 on that stack.

The stack seeds its demo data (``deploy/local/seed.py``, started by the runner) and runs without the
generated click stream (``STREAM_LOADGEN_RATE=0``), so what reaches the analytics is exactly the
demo's orders and the tour's own events, and can be counted.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import ROOT, Stack, isolated_stack, wait_for

from asynccore.testing import wait_until

# A stack start (~1-2 min on a busy machine), the seeding, the tour with its 10 s load test.
pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

README = ROOT / "README.md"
TOUR_HEADING = "## A ten-minute tour"
TOUR_MARK = "# tour:"
DEFAULT_RUN_DIR = "/tmp/asyncstack"
# The runner's default ports (deploy/local/run's header) and the variable that moves each.
DEFAULT_PORTS = {
    8080: "NGINX_PORT",
    8089: "NGINX_STATUS_PORT",
    9113: "NGINX_EXPORTER_PORT",
    9090: "PROMETHEUS_PORT",
    9094: "ALERTMANAGER_PORT",
    9121: "REDIS_EXPORTER_PORT",
    9104: "MYSQLD_EXPORTER_PORT",
    8081: "BLOG_PORT",
    8181: "BLOG_PORT_2",
    8082: "ORDERS_PORT",
    8182: "ORDERS_PORT_2",
    8092: "ORDERS_WORKER_PORT",
    8083: "STREAM_PORT",
    8183: "STREAM_PORT_2",
    8090: "PAYMENT_SANDBOX_PORT",
    8025: "SMTP_SINK_HTTP_PORT",
    9404: "KAFKA_METRICS_PORT",
    9092: "KAFKA_PORT",
}
# An address on this machine with a path; the character after it tells a template (…/article/$SLUG).
URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/[^\s'\"<>()\[\]`$]*)")
SEEDED = re.compile(
    r"^demo data: (?!FAILED)(\d+) articles by (\d+) authors, .*?(\d+) products, (\d+) orders", re.M
)
DEMO_LINE = re.compile(r"^demo data: .*$", re.M)
SEED_TIMEOUT_S = 240.0  # the seeder's own bound is 120 s once the stack announced itself
ARRIVE_TIMEOUT_S = 60.0
TOUR_TIMEOUT_S = 300.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)


def load_seed() -> Any:
    """deploy/local/seed.py as a module (it is a script, not a package): its data set is the truth."""
    spec = importlib.util.spec_from_file_location("demo_seed", ROOT / "deploy" / "local" / "seed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


SEED = load_seed()


@dataclass(frozen=True)
class Block:
    step: str
    script: str


def tour_blocks(readme: str) -> list[Block]:
    """The tour's ```sh blocks marked ``# tour: <step>``, in README order."""
    start = readme.index(TOUR_HEADING)
    end = readme.find("\n## ", start + len(TOUR_HEADING))
    section = readme[start : end if end >= 0 else len(readme)]
    blocks = []
    for body in re.findall(r"^```sh\n(.*?)^```$", section, re.M | re.S):
        first = body.splitlines()[0]
        if first.startswith(TOUR_MARK):
            blocks.append(Block(first.removeprefix(TOUR_MARK).strip(), body))
    return blocks


def localise(text: str, stack: Stack) -> str:
    """The README's text for this stack: its ports and run dir in place of the defaults."""

    def port(found: re.Match[str]) -> str:
        default = int(found.group(1))
        var = DEFAULT_PORTS.get(default)
        if var is None:
            return found.group(0)  # not the local stack's (MariaDB's 3306, compose's Grafana …)
        # A variable the stack's environment does not set keeps the runner's default.
        return f"127.0.0.1:{stack.env.get(var, default)}"

    return re.sub(r"127\.0\.0\.1:(\d+)", port, text).replace(DEFAULT_RUN_DIR, str(stack.run_dir))


def addresses(text: str, *, skip_posts: bool) -> set[str]:
    """Every http://127.0.0.1:<port>/… in ``text`` but templates and, when asked, POST targets."""
    found = set()
    for line in text.splitlines():
        if skip_posts and ("-X POST" in line or " -d " in line):
            continue
        for match in URL.finditer(line):
            if line[match.end() : match.end() + 1] in ("$", "<", "{"):
                continue  # a template: /article/$SLUG
            found.add(match.group(0).rstrip(".,;:"))
    return found


def banner(stack: Stack) -> str:
    output = stack.output
    start = output.index("asyncstack is up")
    return output[start : output.index("Ctrl-C stops everything.", start)]


def run_tour(stack: Stack, blocks: list[Block], log: Path) -> tuple[int, dict[str, str]]:
    """The blocks in one ``bash -e``; returns its status and each completed block's output."""
    marks = [f"@@tour-done {i}@@" for i in range(len(blocks))]
    script = "\n".join(f"{localise(b.script, stack)}\necho '{m}'" for b, m in zip(blocks, marks, strict=True))
    env = dict(stack.env)
    local_bin = Path.home() / ".local" / "bin"  # where the Makefile installs uv
    env["PATH"] = os.pathsep.join([str(local_bin), env.get("PATH", "")])
    with log.open("w") as out:
        done = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=TOUR_TIMEOUT_S,
            check=False,
        )
    text = log.read_text()
    outputs, since = {}, 0
    for block, mark in zip(blocks, marks, strict=True):
        at = text.find(mark, since)
        if at < 0:
            break
        outputs[block.step] = text[since:at]
        since = at + len(mark) + 1
    return done.returncode, outputs


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        assert resp.status == 200, f"{url}: {resp.status} {await resp.text()}"
        return await resp.json()


async def summary_counts(http: aiohttp.ClientSession, stack: Stack) -> dict[str, int]:
    body = await get_json(http, f"{stack.front}/api/analytics/summary")
    counts: dict[str, int] = body["counts"]
    return counts


async def transitions(http: aiohttp.ClientSession, stack: Stack) -> dict[str, float]:
    query = urllib.parse.quote("sum by (to) (orders_transitions_total)")
    body = await get_json(http, f"{stack.prometheus}/api/v1/query?query={query}")
    return {r["metric"]["to"]: float(r["value"][1]) for r in body["data"]["result"]}


@pytest.fixture(scope="module")
def tour_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with isolated_stack(tmp_path_factory.mktemp("tour"), DEMO="1", STREAM_LOADGEN_RATE="0") as running:
        yield running


@pytest.fixture(scope="module")
def seeded(tour_stack: Stack) -> re.Match[str]:
    """The seeder's one line, once it said it succeeded."""
    wait_for(lambda: DEMO_LINE.search(tour_stack.output) is not None, SEED_TIMEOUT_S, "the demo data line")
    line = DEMO_LINE.search(tour_stack.output)
    assert line is not None
    found = SEEDED.match(line.group(0))
    assert found, f"the seeder did not succeed: {line.group(0)}\n{tour_stack.output[-3000:]}"
    return found


def test_the_tour_blocks_are_found() -> None:
    steps = [block.step for block in tour_blocks(README.read_text())]
    assert len(steps) >= 7, steps
    assert len(set(steps)) == len(steps), steps


async def test_make_run_shows_the_demo_data(tour_stack: Stack, seeded: re.Match[str]) -> None:
    articles, authors, products, orders = map(int, seeded.groups())
    assert (articles, authors, products, orders) == (
        len(SEED.ARTICLES),
        len(SEED.AUTHORS),
        len(SEED.PRODUCTS),
        len(SEED.ORDERS),
    )
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        async with http.get(f"{tour_stack.front}/") as resp:
            assert resp.status == 200
            home = await resp.text()
        titles = [a.title for a in SEED.ARTICLES]
        assert sum(f">{t}<" in home for t in titles) >= 5, home[:3000]
        listed = await get_json(http, f"{tour_stack.front}/api/products?limit=100")
        assert {p["sku"] for p in listed["products"]} >= {p.sku for p in SEED.PRODUCTS}
        assert all(p["stock"] > 0 for p in listed["products"])
        # The demo orders were paid, and their events counted once each.
        await wait_until(
            lambda: demo_orders_counted(http, tour_stack), ARRIVE_TIMEOUT_S, 0.5, "the demo's events"
        )
        fulfilled = sum(1 for *_, fulfil in SEED.ORDERS if fulfil)

        async def in_prometheus() -> bool:
            seen = await transitions(http, tour_stack)
            return seen.get("paid", 0) >= len(SEED.ORDERS) and seen.get("fulfilled", 0) >= fulfilled

        await wait_until(in_prometheus, ARRIVE_TIMEOUT_S, 1, "the demo orders' transitions in Prometheus")


async def test_the_readme_tour_runs_as_written(
    tour_stack: Stack, seeded: re.Match[str], tmp_path: Path
) -> None:
    blocks = tour_blocks(README.read_text())
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        await wait_until(
            lambda: demo_orders_counted(http, tour_stack), ARRIVE_TIMEOUT_S, 0.5, "the demo's events"
        )
        before = await summary_counts(http, tour_stack)
        status, outputs = await asyncio.to_thread(run_tour, tour_stack, blocks, tmp_path / "tour.log")
        log = (tmp_path / "tour.log").read_text()
        unfinished = [b.step for b in blocks if b.step not in outputs]
        assert status == 0 and not unfinished, f"stopped in {unfinished[:1]} (exit {status}):\n{log[-5000:]}"
        said = "\n".join(outputs.values())

        # The order: placed once under its key, replayed, pending → paid → fulfilled.
        placed = re.search(r"^order (\d+)$", said, re.M)
        assert placed, log
        order_id = int(placed.group(1))
        assert re.search(rf"^Location: /api/orders/{order_id}\r?$", said, re.M | re.I), log
        assert re.search(r"^Idempotent-Replayed: true\r?$", said, re.M | re.I), log
        assert re.search(r"^stock left: 8$", said, re.M), log
        assert re.search(r"^(pending\n)*paid\nfulfilled$", said, re.M), log

        # Its events reach the analytics: the order's one line and the tour's two page views, exactly.
        async def arrived() -> bool:
            counts = await summary_counts(http, tour_stack)
            return (
                counts.get("order_placed", 0) - before.get("order_placed", 0) == 1
                and counts.get("payment", 0) - before.get("payment", 0) == 1
                and counts.get("page_view", 0) - before.get("page_view", 0) == 2
            )

        await wait_until(arrived, ARRIVE_TIMEOUT_S, 0.5, "the tour's events in the analytics summary")
        assert re.search(r"also viewed: \['\d+'\]$", said, re.M), log
        assert re.search(r"^freshness [\d.]+ \{.*\}$", said, re.M), log
        # The worker's confirmation mail, and the transitions as Prometheus scraped them.
        inbox = f"http://127.0.0.1:{tour_stack.port('SMTP_SINK_HTTP_PORT')}/messages"

        async def mailed() -> bool:
            messages = (await get_json(http, inbox))["messages"]
            return any(m["subject"] == f"Order {order_id} confirmed" for m in messages)

        await wait_until(mailed, ARRIVE_TIMEOUT_S, 0.5, f"order {order_id}'s confirmation in the inbox")

        async def in_prometheus() -> bool:
            seen = await transitions(http, tour_stack)
            fulfilled = sum(1 for *_, fulfil in SEED.ORDERS if fulfil) + 1
            return seen.get("paid", 0) >= len(SEED.ORDERS) + 1 and seen.get("fulfilled", 0) >= fulfilled

        await wait_until(
            in_prometheus, ARRIVE_TIMEOUT_S, 1, "the tour's order paid and fulfilled, in Prometheus"
        )
        assert re.search(r"^targets up: \d+$", said, re.M), log
    # The load test met its SLOs and left its report where the README says.
    assert "blog: SLOs met" in said, log
    report_dir = said.strip().splitlines()[-1]
    assert re.fullmatch(r"loadtests/reports/blog-smoke-\d{8}-\d{6}/", report_dir), log
    assert "<html" in (ROOT / report_dir / "report.html").read_text()[:2000].lower()


async def test_every_address_in_the_readme_and_the_banner_answers(tour_stack: Stack) -> None:
    readme_text = README.read_text()
    ports = {int(url.split(":")[2].split("/")[0]) for url in addresses(readme_text, skip_posts=True)}
    assert ports <= DEFAULT_PORTS.keys(), (
        f"addresses on ports the local stack has not: {ports - DEFAULT_PORTS.keys()}"
    )
    readme = addresses(localise(readme_text, tour_stack), skip_posts=True)
    shown = addresses(banner(tour_stack), skip_posts=False)
    assert len(readme) >= 10 and len(shown) >= 3, (readme, shown)
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        for url in sorted(readme | shown):
            async with http.get(url) as resp:
                assert resp.status == 200, f"{url}: {resp.status} {(await resp.text())[:300]}"


async def test_seeding_again_changes_nothing(tour_stack: Stack, seeded: re.Match[str]) -> None:
    """A later start prints the kept line; a seeding cut short (no marker) resumes, duplicating nothing."""
    argv = [stack_python(tour_stack), str(ROOT / "deploy" / "local" / "seed.py")]
    argv += ["--front", tour_stack.front, "--run-dir", str(tour_stack.run_dir)]

    def seed() -> str:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip()

    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        before = await demo_state(http, tour_stack)
        kept = await asyncio.to_thread(seed)
        assert kept.startswith(seeded.group(0)) and "kept from this run dir" in kept, kept
        (tour_stack.run_dir / SEED.MARKER).unlink()
        resumed = await asyncio.to_thread(seed)
        found = SEEDED.match(resumed)
        assert found and found.groups() == seeded.groups(), resumed
        assert (tour_stack.run_dir / SEED.MARKER).exists()
        assert await demo_state(http, tour_stack) == before


async def demo_orders_counted(http: aiohttp.ClientSession, stack: Stack) -> bool:
    """Every line of the demo orders counted once as placed and once as paid."""
    lines = sum(len(items) for _, _, items, _ in SEED.ORDERS)
    counts = await summary_counts(http, stack)
    return counts.get("order_placed") == lines and counts.get("payment") == lines


async def demo_state(http: aiohttp.ClientSession, stack: Stack) -> tuple[object, ...]:
    """What a second seeding must not change: articles, comments, products and their stock."""
    articles = await get_json(http, f"{stack.front}/api/articles?limit=100")
    comments = 0
    for article in articles["articles"]:
        comments += len(
            (await get_json(http, f"{stack.front}/api/articles/{article['slug']}/comments"))["comments"]
        )
    products = await get_json(http, f"{stack.front}/api/products?limit=100")
    stock = sorted((p["sku"], p["stock"]) for p in products["products"])
    return articles["articlesCount"], comments, products["count"], stock


def stack_python(stack: Stack) -> str:
    """The project's Python, as the runner found it (stack.env)."""
    for line in (stack.run_dir / "stack.env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "ASYNCSTACK_PYTHON":
            return value
    raise AssertionError("stack.env has no ASYNCSTACK_PYTHON")
