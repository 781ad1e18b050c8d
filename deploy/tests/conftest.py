"""The local stack as the tests see it: the real ``deploy/local/run``, on ports and data of its own.

One stack serves the whole session (starting every service is the slow part). It never touches a
developer's ``make run``: every port is a free one, the run dir is a temporary folder (so its own
Apache Kafka broker and data), Redis is a private ``redis-server``, MariaDB a fresh database and RabbitMQ
a fresh vhost, all removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from asynccore.pools.mysql import drop_database
from asynccore.testing import free_port, server_url

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "deploy" / "local" / "run"
UP_TIMEOUT_S = 90.0
# Services refuse to start without a JWT secret (no default in code): processes these tests start
# directly sign with this one; the stack generates its own per run dir.
os.environ.setdefault("JWT_SECRET", secrets.token_urlsafe(32))
STOP_TIMEOUT_S = 20.0

PORT_VARS = (
    "NGINX_PORT",
    "NGINX_STATUS_PORT",
    "NGINX_EXPORTER_PORT",
    "PROMETHEUS_PORT",
    "ALERTMANAGER_PORT",
    "REDIS_EXPORTER_PORT",
    "MYSQLD_EXPORTER_PORT",
    "BLOG_PORT",
    "BLOG_PORT_2",
    "ORDERS_PORT",
    "ORDERS_PORT_2",
    "ORDERS_WORKER_PORT",
    "STREAM_PORT",
    "STREAM_PORT_2",
    "PAYMENT_SANDBOX_PORT",
    "SMTP_SINK_PORT",
    "SMTP_SINK_HTTP_PORT",
    "KAFKA_PORT",
    "KAFKA_CONTROLLER_PORT",
    "KAFKA_METRICS_PORT",
)

# Procfile process -> the port variable of its listener.
PROCESS_PORTS = {
    "kafka": "KAFKA_PORT",
    "nginx": "NGINX_PORT",
    "nginx-exporter": "NGINX_EXPORTER_PORT",
    "prometheus": "PROMETHEUS_PORT",
    "alertmanager": "ALERTMANAGER_PORT",
    "redis-exporter": "REDIS_EXPORTER_PORT",
    "mysqld-exporter": "MYSQLD_EXPORTER_PORT",
    "blog1": "BLOG_PORT",
    "blog2": "BLOG_PORT_2",
    "orders1": "ORDERS_PORT",
    "orders2": "ORDERS_PORT_2",
    "orders-worker": "ORDERS_WORKER_PORT",
    "payment-sandbox": "PAYMENT_SANDBOX_PORT",
    "smtp-sink": "SMTP_SINK_PORT",
    "stream1": "STREAM_PORT",
    "stream2": "STREAM_PORT_2",
}
UPSTREAM_PORTS = {
    "blog": ("BLOG_PORT", "BLOG_PORT_2"),
    "orders": ("ORDERS_PORT", "ORDERS_PORT_2"),
    "stream": ("STREAM_PORT", "STREAM_PORT_2"),
}


# What each service runs in a stack, and the stand-ins the whole stack runs for outside services.
# deploy/local/run lists a process only when its console script's module exists, so a service whose
# entry point is broken or gone would silently be left out: start_stack fails instead.
SERVICE_PROCESSES = {
    "blog": ("blog1", "blog2"),
    "orders": ("orders1", "orders2", "orders-worker"),
    "stream": ("stream1", "stream2"),
}
STAND_IN_PROCESSES = ("payment-sandbox", "smtp-sink")


def expected_processes(env: dict[str, str]) -> list[str]:
    """The service processes a stack with this environment must run (``ASYNCSTACK_SERVICES`` picks)."""
    picked = env.get("ASYNCSTACK_SERVICES", "").split()
    if not picked:
        return [*(p for processes in SERVICE_PROCESSES.values() for p in processes), *STAND_IN_PROCESSES]
    return [p for service in picked for p in SERVICE_PROCESSES.get(service, ())]


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    """Synchronous wait on a condition with a deadline (for session fixtures, which have no loop)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not true within {timeout:g}s")
        time.sleep(interval)


def distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@dataclass
class Stack:
    """A running ``deploy/local/run`` and what it wrote to its run dir."""

    run_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    processes: list[str] = field(default_factory=list)

    def port(self, var: str) -> int:
        return int(self.env[var])

    @property
    def front(self) -> str:
        return f"http://127.0.0.1:{self.port('NGINX_PORT')}"

    @property
    def prometheus(self) -> str:
        return f"http://127.0.0.1:{self.port('PROMETHEUS_PORT')}"

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def nginx_conf(self) -> Path:
        return self.run_dir / "nginx" / "nginx.conf"

    def secret(self, name: str) -> str:
        """A secret of this stack (``ORDERS_ADMIN_TOKEN`` …), as the runner made it for its run dir."""
        for line in (self.run_dir / "secrets.env").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == name:
                return value
        raise KeyError(f"{name} is not in {self.run_dir / 'secrets.env'}")

    def upstream_addrs(self, service: str) -> set[str]:
        return {f"127.0.0.1:{self.port(var)}" for var in UPSTREAM_PORTS[service]}

    def access_log(self) -> list[dict[str, object]]:
        path = self.run_dir / "nginx" / "logs" / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if line.strip()]

    def access_log_entry(self, request_id: str) -> dict[str, object] | None:
        return next((e for e in self.access_log() if e["request_id"] == request_id), None)

    def listener_pid(self, port: int) -> int:
        """The process listening on a loopback port (e.g. one service replica)."""
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                return int(conn.pid)
        raise LookupError(f"nothing listens on {port}")


STACK_OWN = {
    "KAFKA_BOOTSTRAP",
    "JWT_SECRET",
    "ORDERS_ADMIN_TOKEN",
    "STREAM_INGEST_TOKEN",
    "STREAM_ADMIN_TOKEN",
}


def stack_env(run_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a test stack: free ports and the given isolation settings."""
    # The stack's own broker and secrets (it generates them in its run dir), not this process's.
    env = {k: v for k, v in os.environ.items() if k not in STACK_OWN}
    env.update(zip(PORT_VARS, map(str, distinct_free_ports(len(PORT_VARS))), strict=True))
    env.update(ASYNCSTACK_RUN_DIR=str(run_dir), BLOG_DB_PATH=str(run_dir / "blog.db"), LOG_LEVEL="WARNING")
    # No demo data unless a test asks for it (the tour does): the tests own what their stack holds.
    env.update(DEMO="0")
    env.update(extra)
    return env


def launch(run_dir: Path, env: dict[str, str]) -> Stack:
    """Start the runner (not waiting for anything); its output goes to ``runner.log`` in the run dir."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "runner.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", str(RUNNER)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a signal to it is like Ctrl-C in its terminal
        )
    return Stack(run_dir=run_dir, env=env, proc=proc, log_path=log_path)


def start_stack(run_dir: Path, env: dict[str, str]) -> Stack:
    """Start the runner and return once it announced that every listener answers."""
    stack = launch(run_dir, env)
    try:
        wait_for(
            lambda: stack.proc.poll() is not None or "asyncstack is up" in stack.output,
            UP_TIMEOUT_S,
            "the stack announced it is up",
        )
        if stack.proc.poll() is not None:
            raise AssertionError(f"the runner exited with {stack.proc.returncode}:\n{stack.output[-4000:]}")
        stack.processes = [
            line.split(":", 1)[0] for line in (run_dir / "Procfile").read_text().splitlines() if line
        ]
        missing = [p for p in expected_processes(env) if p not in stack.processes]
        if missing:
            raise AssertionError(
                f"the stack does not run {', '.join(missing)}: deploy/local/run lists a process only when "
                "it finds its console script ([project.scripts] of a package it reads) and the script's "
                "module exists, so that entry point is broken, gone, or in a package the runner does not "
                f"read. Procfile: {', '.join(stack.processes)}"
            )
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stack_pids(stack: Stack) -> dict[int, float]:
    """Every process the runner started (pid -> start time, so a reused pid is not mistaken)."""
    try:
        runner = psutil.Process(stack.proc.pid)
        procs = [runner, *runner.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            found[proc.pid] = proc.create_time()
    return found


def alive(pids: dict[int, float]) -> list[psutil.Process]:
    """Those of ``pids`` still running (a zombie has exited; a reused pid has another start time)."""
    left = []
    for pid, started in pids.items():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
    return left


def stop_stack(stack: Stack, sig: int = signal.SIGTERM) -> list[str]:
    """Signal the runner's group (as Ctrl-C in its terminal would) and wait for it to exit.

    Returns what it left running, after killing those leftovers here so they never outlive the test.
    """
    started = stack_pids(stack)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(stack.proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        stack.proc.wait(STOP_TIMEOUT_S)
    described = []
    for proc in alive(started):
        with contextlib.suppress(psutil.NoSuchProcess):
            described.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        stack.proc.wait(5)
    return described


class PrivateRedis:
    """A throwaway ``redis-server`` for the test stack (the services' Redis data stays ours)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *("--save", ""),
                *("--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: answers(self.port), 10, f"redis-server on {self.port}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def isolated_stack(run_dir: Path, **extra: str) -> Iterator[Stack]:
    """The whole local stack, every service that exists, on ports and data of its own."""
    name = f"stacktest_{uuid.uuid4().hex[:10]}"
    redis = PrivateRedis()
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    mysql_url = f"{server_url('MYSQL')}/{name}"
    env = stack_env(
        run_dir,
        REDIS_URL=redis.url,
        MYSQL_URL=mysql_url,
        AMQP_URL=f"amqp://guest:guest@127.0.0.1:5672/{name}",
        **extra,
    )
    try:
        running = start_stack(run_dir, env)
        try:
            yield running
        finally:
            stop_stack(running)
    finally:
        redis.stop()
        rabbitmqctl("delete_vhost", name)
        asyncio.run(drop_database(mysql_url))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Low limits, so the limit tests need only short bursts; reads are never limited. Loopback is
    # limited like any address here: the tests are this machine's clients.
    with isolated_stack(
        tmp_path_factory.mktemp("stack"),
        NGINX_WRITE_RATE="5r/s",
        NGINX_WRITE_BURST="10",
        NGINX_LOGIN_RATE="1r/s",
        NGINX_LOGIN_BURST="3",
        NGINX_INGEST_RATE="2r/s",
        NGINX_INGEST_BURST="4",
        NGINX_LIVE_PER_ADDRESS="2",
        NGINX_LIVE_TOTAL="3",
        NGINX_EXEMPT_LOOPBACK="0",
    ) as running:
        yield running


@pytest.fixture
def request_id() -> str:
    return f"test-{uuid.uuid4().hex}"


HEX_ID = re.compile(r"^[0-9a-f]{32}$")
