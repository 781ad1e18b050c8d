"""Prometheus in the local stack: every process that serves metrics is a target, and every target is up;
the exporters reach their servers; the infrastructure listens on loopback only."""

from __future__ import annotations

import ipaddress
import subprocess
from typing import Any

import aiohttp
import psutil
import pytest
from conftest import PROCESS_PORTS, ROOT, Stack

from asynccore.testing import wait_until

pytestmark = pytest.mark.stack

TIMEOUT = aiohttp.ClientTimeout(total=5)

# Procfile process -> (Prometheus job, port variable); processes not listed here are not scraped.
SCRAPED = {
    "prometheus": ("prometheus", "PROMETHEUS_PORT"),
    "alertmanager": ("alertmanager", "ALERTMANAGER_PORT"),
    "nginx-exporter": ("nginx", "NGINX_EXPORTER_PORT"),
    "redis-exporter": ("redis", "REDIS_EXPORTER_PORT"),
    "mysqld-exporter": ("mariadb", "MYSQLD_EXPORTER_PORT"),
    "blog1": ("blog", "BLOG_PORT"),
    "blog2": ("blog", "BLOG_PORT_2"),
    "orders1": ("orders", "ORDERS_PORT"),
    "orders2": ("orders", "ORDERS_PORT_2"),
    "orders-worker": ("orders-worker", "ORDERS_WORKER_PORT"),
    "stream1": ("stream", "STREAM_PORT"),
    "stream2": ("stream", "STREAM_PORT_2"),
    "kafka": ("kafka", "KAFKA_METRICS_PORT"),  # the broker's JMX exporter agent
}
# The machine's RabbitMQ (not a process of the stack): its Prometheus plugin, node totals and per queue.
RABBITMQ = {
    ("rabbitmq", "http://127.0.0.1:15692/metrics"),
    ("rabbitmq-queues", "http://127.0.0.1:15692/metrics/detailed?family=queue_coarse_metrics"),
}


async def api(stack: Stack, path: str, **params: str) -> Any:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(f"{stack.prometheus}/api/v1/{path}", params=params) as resp,
    ):
        body = await resp.json()
        assert body["status"] == "success", body
        return body["data"]


def promtool_check(config: str) -> None:
    checked = subprocess.run(
        ["promtool", "check", "config", config], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_every_process_of_the_stack_is_a_target_and_up(stack: Stack) -> None:
    expected = {
        (job, f"http://127.0.0.1:{stack.port(var)}/metrics")
        for process, (job, var) in SCRAPED.items()
        if process in stack.processes
    } | RABBITMQ
    seen: dict[tuple[str, str], str] = {}

    async def all_up() -> bool:
        targets = (await api(stack, "targets", state="active"))["activeTargets"]
        seen.clear()
        seen.update(
            {(t["labels"]["job"], t["scrapeUrl"]): f"{t['health']} {t['lastError']}" for t in targets}
        )
        return set(seen) == expected and all(state.startswith("up") for state in seen.values())

    try:
        await wait_until(all_up, timeout=45, interval=0.5, message="every target up")
    except AssertionError:
        pytest.fail(f"expected {sorted(expected)} all up; Prometheus has {seen}")


async def test_nginx_metrics_reach_prometheus_through_the_exporter(stack: Stack) -> None:
    async def nginx_up() -> bool:
        result = (await api(stack, "query", query="nginx_up"))["result"]
        return bool(result) and result[0]["value"][1] == "1"

    await wait_until(nginx_up, timeout=30, interval=0.5, message="nginx_up == 1 in Prometheus")

    async def requests_total(session: aiohttp.ClientSession) -> int:
        async with session.get(f"http://127.0.0.1:{stack.port('NGINX_EXPORTER_PORT')}/metrics") as resp:
            text = await resp.text()
        return int(
            next(line for line in text.splitlines() if line.startswith("nginx_http_requests_total ")).split()[
                1
            ]
        )

    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        before = await requests_total(session)
        async with session.get(f"{stack.front}/api/nothing-here") as resp:
            assert resp.status == 404
        assert await requests_total(session) > before


# Each exporter's own verdict on its server (1: it answered the last scrape's questions).
SERVER_UP = {"nginx": "nginx_up", "redis": "redis_up", "mariadb": "mysql_up"}


@pytest.mark.parametrize("job", sorted(SERVER_UP))
async def test_the_exporter_reaches_its_server(stack: Stack, job: str) -> None:
    query = f'{SERVER_UP[job]}{{job="{job}"}}'
    seen: list[Any] = []

    async def server_up() -> bool:
        seen[:] = (await api(stack, "query", query=query))["result"]
        return bool(seen) and all(sample["value"][1] == "1" for sample in seen)

    try:
        await wait_until(server_up, timeout=30, interval=0.5, message=f"{query} == 1")
    except AssertionError:
        pytest.fail(f"{query}: {seen}")


INFRASTRUCTURE = ["prometheus", "alertmanager", "nginx-exporter", "redis-exporter", "mysqld-exporter"]


@pytest.mark.parametrize("process", INFRASTRUCTURE)
def test_the_observability_processes_listen_on_loopback_only(stack: Stack, process: str) -> None:
    pid = stack.listener_pid(stack.port(PROCESS_PORTS[process]))
    listening = [
        conn.laddr
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert listening
    assert all(ipaddress.ip_address(addr.ip).is_loopback for addr in listening), listening
    # One port each: Alertmanager runs as one node, without its cluster (gossip) listener.
    assert {addr.port for addr in listening} == {stack.port(PROCESS_PORTS[process])}, listening


def test_the_mysqld_exporters_login_is_readable_by_its_owner_only(stack: Stack) -> None:
    cnf = stack.run_dir / "mysqld-exporter.cnf"
    assert cnf.stat().st_mode & 0o777 == 0o600
    assert "password=" in cnf.read_text()
    exporter = psutil.Process(stack.listener_pid(stack.port("MYSQLD_EXPORTER_PORT")))
    assert not [arg for arg in exporter.cmdline() if "password" in arg.lower()]


def test_promtool_accepts_the_generated_local_config(stack: Stack) -> None:
    promtool_check(str(stack.run_dir / "prometheus.yml"))


def test_promtool_accepts_the_compose_config() -> None:
    promtool_check(str(ROOT / "deploy" / "prometheus" / "prometheus.yml"))
