"""Grafana dashboards: generated from code, well formed, every query parses in a real Prometheus with
the recording rules loaded, and (``stack`` marker) every panel shows data on the running local stack.

Grafana itself cannot run here, so its datasource is played by Prometheus's HTTP API: a query that
does not parse is a 400 there, and a panel whose query returns nothing on a stack with traffic is a
panel that would stay empty in Grafana.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Stack
from ruamel.yaml import YAML

from asynccore.testing import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
GRID_COLUMNS = 24
TOKEN = re.compile(r"[A-Za-z_:][\w:]*")
START_TIMEOUT_S = 30.0
DATA_TIMEOUT_S = 100.0  # the SLO recording group evaluates once a minute
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
# What Grafana substitutes for its interval variables, as Prometheus needs a literal duration.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
# The services a dashboard's panels need running to show data.
NEEDS = {
    "overview.json": ("blog", "orders", "stream"),
    "blog.json": ("blog",),
    "orders.json": ("orders",),
    "stream.json": ("stream",),
}


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str

    @property
    def promql(self) -> str:
        expr = self.expr
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        return expr

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel}: {self.expr}"


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panels(path: Path) -> list[dict[str, Any]]:
    return [p for p in load(path)["panels"] if p["type"] != "row"]


def panel_queries(path: Path) -> list[PanelQuery]:
    return [PanelQuery(path.name, p["title"], t["expr"]) for p in panels(path) for t in p["targets"]]


def all_queries() -> list[PanelQuery]:
    return [q for path in DASHBOARDS for q in panel_queries(path)]


def datasource_uid() -> str:
    provisioned = YAML(typ="safe").load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    return str(provisioned["datasources"][0]["uid"])


# --- the JSON --------------------------------------------------------------------------------------------
def test_committed_dashboards_are_what_the_generator_writes() -> None:
    checked = subprocess.run(
        [sys.executable, str(GRAFANA / "generate.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_four_dashboards_exist_with_unique_uids() -> None:
    assert {p.name for p in DASHBOARDS} == set(NEEDS)
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_use_the_provisioned_datasource_and_do_not_overlap(path: Path) -> None:
    uid = datasource_uid()
    taken: set[tuple[int, int]] = set()
    ids = [p["id"] for p in load(path)["panels"]]
    assert len(set(ids)) == len(ids), "panel ids repeat"
    for panel in load(path)["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_COLUMNS, f"{panel['title']} leaves the grid"
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, f"{panel['title']}: not the provisioned datasource"
        assert panel["targets"], f"{panel['title']} has no query"
        assert all(t["datasource"]["uid"] == uid and t["expr"].strip() for t in panel["targets"])
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


# --- every query parses in a real Prometheus with the rules loaded -----------------------------------
def http_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body or b"{}")
        except ValueError:  # plain text, e.g. "Service Unavailable" while Prometheus starts up
            return exc.code, {"error": body.decode(errors="replace")}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Prometheus scraping only itself, with deploy/prometheus/rules loaded."""
    workdir = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_DIR / "*.yml")],
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        ],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"prometheus exited {proc.returncode}: {(workdir / 'prometheus.log').read_text()[-2000:]}"
                )
            try:
                if http_json(f"{url}/api/v1/status/buildinfo")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() >= deadline:
                pytest.fail(f"prometheus did not answer within {START_TIMEOUT_S}s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_prometheus_loads_every_rule_group(prometheus: str) -> None:
    wanted = {
        g["name"]
        for path in RULES_DIR.glob("*.yml")
        for g in YAML(typ="safe").load(path.read_text())["groups"]
    }
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        status, body = http_json(f"{prometheus}/api/v1/rules")
        groups = body["data"]["groups"] if status == 200 else []
        evaluated = [g for g in groups if g["lastEvaluation"] > "0001-01-01T00:00:00Z"]
        if {g["name"] for g in evaluated} >= wanted - {"asyncstack.slo"} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {g["name"] for g in groups} == wanted
    broken = [(r["name"], r["lastError"]) for g in groups for r in g["rules"] if r["health"] == "err"]
    assert not broken, broken


@pytest.mark.parametrize("query", all_queries(), ids=str)
def test_panel_query_parses(prometheus: str, query: PanelQuery) -> None:
    status, body = http_json(f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': query.promql})}")
    assert status == 200 and body["status"] == "success", f"{query}: {status} {body.get('error')}"


# --- (stack) every panel shows data ------------------------------------------------------------------------
async def expect(resp: aiohttp.ClientResponse, *statuses: int) -> Any:
    body = await resp.json(content_type=None)
    assert resp.status in statuses, f"{resp.method} {resp.url}: {resp.status} {body}"
    return body


async def drive_traffic(front: str, admin_token: str) -> None:
    """A little of everything through the front door: the blog's reads (misses, then hits, with
    concurrent readers of one cold key), an order and a stock-out, the stream's queries. Events reach
    the stream from the stack's stream-loadgen."""
    name = f"dash{uuid.uuid4().hex[:10]}"
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        user = {"username": name, "email": f"{name}@example.test", "password": f"pw-{uuid.uuid4().hex}"}
        async with http.post(f"{front}/api/users", json={"user": user}) as resp:
            token = (await expect(resp, 201, 200))["user"]["token"]
        auth = {"Authorization": f"Token {token}"}
        article = {
            "title": f"Watching {name}",
            "description": "dashboards",
            "body": "data",
            "tagList": ["ops"],
        }
        async with http.post(f"{front}/api/articles", json={"article": article}, headers=auth) as resp:
            slug = (await expect(resp, 201, 200))["article"]["slug"]

        async def get(path: str) -> None:
            async with http.get(f"{front}{path}") as resp:
                await expect(resp, 200)

        await asyncio.gather(*(get(f"/api/articles/{slug}") for _ in range(10)))
        for path in ("/api/articles", "/api/tags", f"/api/articles/{slug}", "/api/articles", "/api/products"):
            await get(path)

        admin = {"Authorization": f"Bearer {admin_token}"}
        product = {"sku": name, "name": "dashboard widget", "price_cents": 100, "stock": 1}
        async with http.post(f"{front}/api/products", json=product, headers=admin) as resp:
            product_id = (await expect(resp, 201))["id"]
        order = {"items": [{"product_id": product_id, "quantity": 1}]}
        async with http.post(f"{front}/api/orders", json=order, headers=auth) as resp:
            await expect(resp, 201, 202)
        async with http.post(f"{front}/api/orders", json=order, headers=auth) as resp:
            await expect(resp, 409)  # the stock is gone: a stock-out

        for path in ("/api/analytics/summary", "/api/analytics/top-products"):
            await get(path)


async def prometheus_query(http: aiohttp.ClientSession, base: str, promql: str) -> list[Any]:
    async with http.get(f"{base}/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return list(body["data"]["result"])


@pytest.fixture(scope="module")
def traffic(stack: Stack) -> None:
    asyncio.run(drive_traffic(stack.front, stack.secret("ORDERS_ADMIN_TOKEN")))


@pytest.mark.stack
@pytest.mark.timeout(DATA_TIMEOUT_S + 60)
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
async def test_every_panel_shows_data_on_the_running_stack(stack: Stack, traffic: None, path: Path) -> None:
    empty: list[PanelQuery] = []
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:

        async def every_panel_has_data() -> bool:
            empty[:] = [
                q for q in panel_queries(path) if not await prometheus_query(http, stack.prometheus, q.promql)
            ]
            return not empty

        try:
            await wait_until(every_panel_has_data, timeout=DATA_TIMEOUT_S, interval=5.0)
        except AssertionError:
            pytest.fail(await explain_empty(http, stack.prometheus, empty))


async def explain_empty(http: aiohttp.ClientSession, base: str, empty: list[PanelQuery]) -> str:
    """Which empty panels read a metric the services declare but never gave a series: a labelled
    counter whose label values are not pre-initialised (``counter.labels(value)`` at start-up)."""
    async with http.get(f"{base}/api/v1/metadata") as resp:
        declared = set((await resp.json())["data"])
    async with http.get(f"{base}/api/v1/label/__name__/values") as resp:
        with_series = set((await resp.json())["data"])
    lines = []
    for query in empty:
        tokens = set(TOKEN.findall(query.expr))
        no_series = sorted(tokens & (declared - with_series))
        hint = f"  <- declared, no series yet: {', '.join(no_series)}" if no_series else ""
        lines.append(f"  {query}{hint}")
    return f"panels without data after {DATA_TIMEOUT_S:g}s of traffic:\n" + "\n".join(lines)
