"""Alerting end to end: a rule of deploy/prometheus/rules fires in the local stack's Prometheus and the
alert reaches the stack's Alertmanager; and the mail example of deploy/prometheus/alertmanager.yml,
uncommented, delivers a real email to an SMTP server.

The stack test keeps the real rule: InstanceDown fires after a target has been down for a minute, so it
hangs one replica (SIGSTOP: its scrapes time out, as a hung process's do) for about 75 seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
from conftest import PROCESS_PORTS, Stack, answers, wait_for
from ruamel.yaml import YAML

from asynccore.testing import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
ALERTMANAGER_YML = ROOT / "deploy" / "prometheus" / "alertmanager.yml"
ALERTS_YML = ROOT / "deploy" / "prometheus" / "rules" / "alerts.yml"
TIMEOUT = aiohttp.ClientTimeout(total=5)
# Which process to hang: a second replica (nginx routes around it), else an exporter.
HANG_FIRST = ["blog2", "orders2", "redis-exporter"]
# Prometheus scrapes every 5 s and evaluates every 5 s: up == 0 within ~10 s, then the rule's `for`.
FIRE_SLACK_S = 60.0
CLEAR_TIMEOUT_S = 60.0
START_TIMEOUT_S = 30.0
MAIL_TIMEOUT_S = 40.0  # the route's group_wait (10 s) and a first delivery


def instance_down_for_s() -> float:
    """InstanceDown's `for`, in seconds, as the rules file says it."""
    groups = YAML(typ="safe").load(ALERTS_YML.read_text())["groups"]
    rule = next(r for g in groups for r in g["rules"] if r.get("alert") == "InstanceDown")
    value = str(rule["for"])
    units = {"s": 1, "m": 60, "h": 3600}
    return float(value[:-1]) * units[value[-1]]


async def get_json(url: str, **params: str) -> Any:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(url, params=params) as resp:
        assert resp.status == 200, f"GET {url}: {resp.status}"
        return await resp.json()


def alertmanager(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.port('ALERTMANAGER_PORT')}"


@pytest.mark.stack
async def test_prometheus_sends_its_alerts_to_the_stacks_alertmanager(stack: Stack) -> None:
    expected = f"{alertmanager(stack)}/api/v2/alerts"
    seen: list[str] = []

    async def known() -> bool:
        data = (await get_json(f"{stack.prometheus}/api/v1/alertmanagers"))["data"]
        seen[:] = [am["url"] for am in data["activeAlertmanagers"]]
        return seen == [expected]

    try:
        await wait_until(known, timeout=30, interval=0.5)
    except AssertionError:
        pytest.fail(f"Prometheus alerts {seen}, not {[expected]}")
    status = await get_json(f"{alertmanager(stack)}/api/v2/status")
    assert status["cluster"]["status"] == "disabled", "one Alertmanager: no gossip cluster"


@pytest.mark.stack
@pytest.mark.timeout(240)
async def test_a_hung_replica_reaches_alertmanager_as_instance_down(stack: Stack) -> None:
    process = next((p for p in HANG_FIRST if p in stack.processes), None)
    assert process, f"none of {HANG_FIRST} runs in this stack"
    address = f"127.0.0.1:{stack.port(PROCESS_PORTS[process])}"
    hung = psutil.Process(stack.listener_pid(stack.port(PROCESS_PORTS[process])))
    found: list[dict[str, Any]] = []

    async def instance_down_in_alertmanager() -> bool:
        alerts = await get_json(f"{alertmanager(stack)}/api/v2/alerts", filter="alertname=InstanceDown")
        found[:] = [a for a in alerts if a["labels"].get("instance") == address]
        return bool(found)

    hung.suspend()
    try:
        await wait_until(
            instance_down_in_alertmanager,
            timeout=instance_down_for_s() + FIRE_SLACK_S,
            interval=2.0,
            message=f"InstanceDown for {process} ({address}) in Alertmanager",
        )
    finally:
        hung.resume()
    (alert,) = found
    assert alert["labels"]["severity"] == "page"
    assert alert["status"]["state"] == "active", alert["status"]
    assert alert["annotations"]["runbook"].strip()
    assert alert["receivers"] == [{"name": "operators"}]
    # Back to serving: Prometheus resolves the alert and Alertmanager stops listing it.
    await wait_until(
        lambda: _not(instance_down_in_alertmanager()),
        timeout=CLEAR_TIMEOUT_S,
        interval=2.0,
        message=f"InstanceDown for {address} resolved",
    )


async def _not(condition: Any) -> bool:
    return not await condition


# --- the mail example ----------------------------------------------------------------------------------
def with_mail_example(text: str, smarthost: str) -> str:
    """alertmanager.yml with its commented email_configs block uncommented, mailing ``smarthost``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip() == "# email_configs:")
    prefix = lines[start][: lines[start].index("#")] + "# "
    end = start
    while end < len(lines) and lines[end].startswith(prefix):
        lines[end] = lines[end][: len(prefix) - 2] + lines[end][len(prefix) :]
        end += 1
    block = "\n".join(lines[start:end])
    assert "smarthost: 127.0.0.1:2525" in block, block
    lines[start:end] = block.replace("127.0.0.1:2525", smarthost).splitlines()
    return "\n".join(lines) + "\n"


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """The stack's SMTP sink (orders' smtp-sink) on free ports: (SMTP port, HTTP inbox port)."""
    smtp, http = free_port(), free_port()
    env = {**os.environ, "SMTP_PORT": str(smtp), "SMTP_SINK_HTTP_PORT": str(http)}
    env.update(SMTP_SINK_HOST="127.0.0.1", BIND_HOST="127.0.0.1", LOG_LEVEL="WARNING")
    with (tmp_path / "smtp-sink.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "smtp-sink")], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: answers(smtp) and answers(http), START_TIMEOUT_S, "the SMTP sink answers")
        yield smtp, http
    finally:
        stop(proc)


def http_json(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read() or b"null")


def test_the_mail_example_delivers_an_alert_by_email(tmp_path: Path, smtp_sink: tuple[int, int]) -> None:
    smtp, http = smtp_sink
    config = tmp_path / "alertmanager.yml"
    config.write_text(with_mail_example(ALERTMANAGER_YML.read_text(), f"127.0.0.1:{smtp}"))
    checked = subprocess.run(
        ["amtool", "check-config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    port = free_port()
    with (tmp_path / "alertmanager.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                "prometheus-alertmanager",
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: answers(port), START_TIMEOUT_S, "alertmanager answers")
        name = f"MailTest{uuid.uuid4().hex[:8]}"
        http_json(
            f"http://127.0.0.1:{port}/api/v2/alerts",
            [{"labels": {"alertname": name, "job": "test", "severity": "ticket"}}],
        )
        subjects: list[str] = []

        def mailed() -> bool:
            subjects[:] = [m["subject"] for m in http_json(f"http://127.0.0.1:{http}/messages")["messages"]]
            return any(name in subject for subject in subjects)

        try:
            wait_for(mailed, MAIL_TIMEOUT_S, f"an email about {name} in the sink", interval=0.5)
        except AssertionError:
            pytest.fail(
                f"no email about {name}; the sink has {subjects}; alertmanager said:\n"
                f"{(tmp_path / 'alertmanager.log').read_text()[-2000:]}"
            )
    finally:
        stop(proc)
