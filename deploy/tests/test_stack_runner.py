"""The runner itself: it starts, it stops everything it started, it refuses a busy port."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from conftest import (
    PROCESS_PORTS,
    RUNNER,
    PrivateRedis,
    answers,
    launch,
    stack_env,
    start_stack,
    stop_stack,
)

from asynccore.pools.mysql import drop_database, parse_mysql_url
from asynccore.testing import server_url

pytestmark = pytest.mark.stack


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    yield redis
    redis.stop()


def test_ctrl_c_stops_every_process_it_started(tmp_path: Path, private_redis: PrivateRedis) -> None:
    # Only the blog: enough to include supervised replicas, light enough to start twice.
    env = stack_env(tmp_path, ASYNCSTACK_SERVICES="blog", REDIS_URL=private_redis.url)
    stack = start_stack(tmp_path, env)
    expected = {"nginx", "nginx-exporter", "prometheus", "kafka"}
    assert expected <= set(stack.processes)
    ports = [stack.port(PROCESS_PORTS[p]) for p in stack.processes if p in PROCESS_PORTS]
    assert all(answers(port) for port in ports)

    left = stop_stack(stack, signal.SIGINT)

    assert stack.proc.returncode is not None, "the runner did not exit"
    assert left == [], f"left running after Ctrl-C: {left}"
    assert [port for port in ports if answers(port)] == []


def test_a_configuration_error_stops_the_stack_with_its_message(tmp_path: Path) -> None:
    # A replica that crashes is restarted; one that cannot start (exit 2) must not loop forever.
    stack = launch(tmp_path, stack_env(tmp_path, ASYNCSTACK_SERVICES="blog", BLOG_DB_READERS="0"))
    try:
        returncode = stack.proc.wait(60)
    finally:
        left = stop_stack(stack)
    assert returncode != 0
    assert "config error: BLOG_DB_READERS" in stack.output
    assert "not restarting" in stack.output
    assert left == []


def test_a_busy_port_stops_it_before_anything_starts(tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env["PROMETHEUS_PORT"] = str(busy.getsockname()[1])
        ran = subprocess.run(["bash", str(RUNNER)], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    assert f"already in use: prometheus(:{env['PROMETHEUS_PORT']})" in ran.stderr
    assert not answers(int(env["NGINX_PORT"]))


def test_configure_fills_every_placeholder(tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    ran = subprocess.run(
        ["bash", str(RUNNER), "configure"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    nginx_conf = (tmp_path / "nginx" / "nginx.conf").read_text()
    assert not re.search(r"\$\{[A-Z0-9_]+\}", nginx_conf)
    assert f"listen {env['NGINX_PORT']} default_server;" in nginx_conf
    assert f"server 127.0.0.1:{env['BLOG_PORT_2']} " in nginx_conf
    prometheus = (tmp_path / "prometheus.yml").read_text()
    assert f"127.0.0.1:{env['NGINX_EXPORTER_PORT']}" in prometheus
    assert "blog1:" not in prometheus  # no compose hostname survives


def test_configure_puts_the_blog_on_this_machines_mariadb_when_asked(tmp_path: Path) -> None:
    env = stack_env(tmp_path, BLOG_DATABASE_URL="mariadb")
    ran = subprocess.run(
        ["bash", str(RUNNER), "configure"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    lines = (tmp_path / "stack.env").read_text().splitlines()
    url = next(line.split("=", 1)[1] for line in lines if line.startswith("BLOG_DATABASE_URL="))
    assert url.startswith(server_url("MYSQL") + "/blog_"), "the machine's MariaDB, a database per run dir"


def test_the_blog_runs_on_mariadb_through_the_front_door(tmp_path: Path, private_redis: PrivateRedis) -> None:
    url = f"{server_url('MYSQL')}/stacktest_blog_{uuid.uuid4().hex[:12]}"
    env = stack_env(tmp_path, ASYNCSTACK_SERVICES="blog", REDIS_URL=private_redis.url, BLOG_DATABASE_URL=url)
    try:
        stack = start_stack(tmp_path, env)
        try:
            body = json.dumps(
                {"user": {"username": "maria", "email": "maria@example.com", "password": "long-enough"}}
            ).encode()
            request = urllib.request.Request(
                f"{stack.front}/api/users", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 201
        finally:
            stop_stack(stack)
        target = parse_mysql_url(url)
        conn = pymysql.connect(
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password,
            database=target.database,
        )
        with conn, conn.cursor() as cur:
            cur.execute("SELECT username FROM users")
            assert cur.fetchall() == (("maria",),)
        assert not (tmp_path / "blog.db").exists(), "nothing written to the SQLite file"
    finally:
        asyncio.run(drop_database(url))
