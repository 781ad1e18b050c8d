"""The asyncstack spread over the hosts of a :class:`multihost_cluster.Cluster`.

- data: Redis, MariaDB (orders' and the blog's databases), RabbitMQ, Apache Kafka (new instances, data
  in the cluster's temp dir, bound to the data host's address) and the stand-ins for outside services
  (payment provider, SMTP sink);
- app1, app2: one replica each of blog, orders, orders-worker and stream, bound to their host's address,
  configured as deploy/local/run configures them (environment only), pointing at the data host;
- edge: nginx with deploy/nginx/nginx.conf rendered as deploy/local/run renders it, its upstreams the
  app hosts' addresses.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multihost_cluster import ROOT, Cluster, Host, tcp_answers, wait_for

BIN = Path(sys.executable).parent
PORTS = {"blog": 8081, "orders": 8082, "stream": 8083, "orders-worker": 8092}
NGINX_PORT = 8080
PAYMENT_PORT = 8090
SMTP_PORT = 2525
SMTP_HTTP_PORT = 8025
KAFKA_PORT = 9092
STREAM_PARTITIONS = 16


def token() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Secrets:
    jwt: str = field(default_factory=token)
    admin: str = field(default_factory=token)
    ingest: str = field(default_factory=token)
    stream_admin: str = field(default_factory=token)
    mysql: str = field(default_factory=lambda: secrets.token_hex(16))
    amqp: str = field(default_factory=lambda: secrets.token_hex(16))


@dataclass
class Stack:
    cluster: Cluster
    secrets: Secrets = field(default_factory=Secrets)
    nginx_patched: str = ""

    @property
    def data(self) -> Host:
        return self.cluster.hosts["data"]

    @property
    def edge(self) -> Host:
        return self.cluster.hosts["edge"]

    @property
    def apps(self) -> list[Host]:
        return [self.cluster.hosts["app1"], self.cluster.hosts["app2"]]

    @property
    def front(self) -> str:
        return f"http://{self.edge.addr}:{NGINX_PORT}"

    @property
    def mysql_url(self) -> str:
        return f"mysql://asyncstack:{self.secrets.mysql}@{self.data.addr}:3306/orders"

    @property
    def payment(self) -> str:
        return f"http://{self.data.addr}:{PAYMENT_PORT}"

    def service_url(self, host: Host, service: str) -> str:
        return f"http://{host.addr}:{PORTS[service]}"

    def env(self, bind: str) -> dict[str, str]:
        """What every Python process gets (deploy/local/run's stack.env, for these hosts)."""
        d = self.data.addr
        redis = f"redis://{d}:6379/0"
        return {
            "BIND_HOST": bind,
            "LOG_LEVEL": "WARNING",
            "SHUTDOWN_TIMEOUT_S": "4",
            "JWT_SECRET": self.secrets.jwt,
            "ORDERS_ADMIN_TOKEN": self.secrets.admin,
            "STREAM_INGEST_TOKEN": self.secrets.ingest,
            "STREAM_ADMIN_TOKEN": self.secrets.stream_admin,
            "REDIS_URL": redis,
            "REVOCATION_URL": redis,
            "MYSQL_URL": self.mysql_url,
            "AMQP_URL": f"amqp://asyncstack:{self.secrets.amqp}@{d}:5672/",
            "KAFKA_BOOTSTRAP": f"{d}:{KAFKA_PORT}",
            # On the data host, as a second machine needs it: no app host shares a disk with another.
            "BLOG_DATABASE_URL": f"mysql://asyncstack:{self.secrets.mysql}@{d}:3306/blog",
            "BLOG_PUBLIC_URL": self.front,
            "PAYMENT_URL": self.payment,
            "SMTP_HOST": d,
            "SMTP_PORT": str(SMTP_PORT),
            "SMTP_SINK_HOST": d,
            "SMTP_SINK_HTTP_PORT": str(SMTP_HTTP_PORT),
            "PAYMENT_SANDBOX_PORT": str(PAYMENT_PORT),
        }

    # --- data host --------------------------------------------------------------------------------------
    def start_data(self) -> None:
        c, data, addr = self.cluster, self.data, self.data.addr
        base = c.dir / "data"
        # RabbitMQ first: the slowest to boot (~15 s). Its own node (the namespace has its own epmd and
        # distribution port), mnesia dir and cookie (HOME); no plugins; a user allowed from the network.
        rmq = base / "rabbitmq"
        rmq.mkdir(parents=True)
        (rmq / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {addr}:5672\nloopback_users = none\n"
            f"default_user = asyncstack\ndefault_pass = {self.secrets.amqp}\n"
        )
        (rmq / "enabled_plugins").write_text("[].\n")
        c.spawn(
            data,
            "rabbitmq",
            ["/usr/lib/rabbitmq/bin/rabbitmq-server"],
            {
                "HOME": str(rmq),
                "RABBITMQ_NODENAME": "rabbit@localhost",
                "RABBITMQ_MNESIA_BASE": str(rmq / "mnesia"),
                "RABBITMQ_LOG_BASE": str(rmq / "log"),
                "RABBITMQ_CONFIG_FILE": str(rmq / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(rmq / "enabled_plugins"),
                "RABBITMQ_NODE_IP_ADDRESS": addr,
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            },
        )
        c.spawn(
            data,
            "kafka",
            [
                "bash",
                str(ROOT / "deploy" / "kafka" / "broker"),
                "--data-dir",
                str(base / "kafka"),
                "--host",
                addr,
                "--port",
                str(KAFKA_PORT),
            ],
            {"KAFKA_HEAP": "384m"},
        )
        (base / "redis").mkdir()
        c.spawn(
            data,
            "redis",
            [
                "redis-server",
                "--bind",
                addr,
                "--port",
                "6379",
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(base / "redis"),
            ],
        )
        mariadb = base / "mariadb"
        mariadb.mkdir()
        c.exec(
            data,
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={mariadb / 'data'}",
            "--user=root",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            timeout=60,
        )
        socket_path = mariadb / "mysqld.sock"
        c.spawn(
            data,
            "mariadb",
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={mariadb / 'data'}",
                f"--socket={socket_path}",
                f"--pid-file={mariadb / 'mariadbd.pid'}",
                f"--bind-address={addr}",
                "--port=3306",
                "--user=root",
                "--innodb-buffer-pool-size=64M",
                "--max-connections=300",
                "--skip-name-resolve",
            ],
        )
        env = self.env(addr)
        c.spawn(data, "payment-sandbox", [str(BIN / "payment-sandbox")], env)
        c.spawn(data, "smtp-sink", [str(BIN / "smtp-sink")], env)

        wait_for(lambda: self._up(addr, 3306), 60, "mariadb on the data host")
        # The service user; orders creates its database (utf8mb4, as asynccore.pools.mysql says).
        c.exec(
            data,
            "mariadb",
            f"--socket={socket_path}",
            "-u",
            "root",
            input_=(
                f"CREATE USER 'asyncstack'@'%' IDENTIFIED BY '{self.secrets.mysql}';\n"
                "GRANT ALL PRIVILEGES ON orders.* TO 'asyncstack'@'%';\n"
                "GRANT ALL PRIVILEGES ON blog.* TO 'asyncstack'@'%';\n"
            ),
        )
        wait_for(lambda: self._up(addr, 6379), 30, "redis on the data host")
        wait_for(lambda: self._up(addr, PAYMENT_PORT), 60, "payment sandbox on the data host")
        wait_for(lambda: self._up(addr, SMTP_PORT), 60, "smtp sink on the data host")
        wait_for(lambda: self._up(addr, KAFKA_PORT), 120, "kafka on the data host")
        wait_for(lambda: self._up(addr, 5672), 120, "rabbitmq on the data host")

    def _up(self, addr: str, port: int) -> bool:
        self.cluster.check_alive()
        return tcp_answers(addr, port)

    # --- app hosts ----------------------------------------------------------------------------------------
    def migrate(self) -> None:
        """The first blog and orders replicas alone until they are ready: they apply the migrations.

        As a deployment runs its migration once before the replicas (whether processes migrating an
        empty database at once would race is not what this test is about).
        """
        host = self.apps[0]
        for service in ("blog", "orders"):
            self.cluster.spawn(host, service, [str(BIN / service)], self.env(host.addr))
        for service in ("blog", "orders"):
            url = self.service_url(host, service) + "/readyz"
            wait_for(functools.partial(self._ready, url), 90, f"{url} answers 200")

    def start_app(self, host: Host, worker: bool = True) -> None:
        env = self.env(host.addr)
        for service in ("blog", "orders"):
            if not any(p.host is host and p.name == service for p in self.cluster.procs):
                self.cluster.spawn(host, service, [str(BIN / service)], env)
        self.cluster.spawn(host, "stream", [str(BIN / "stream")], env)
        if worker:
            self.cluster.spawn(host, "orders-worker", [str(BIN / "orders-worker")], env)

    def wait_apps_ready(self, timeout: float = 120.0) -> None:
        for host in self.apps:
            for service in PORTS:
                url = self.service_url(host, service) + "/readyz"
                wait_for(functools.partial(self._ready, url), timeout, f"{url} answers 200")

    def _ready(self, url: str) -> bool:
        self.cluster.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    # --- edge host -----------------------------------------------------------------------------------------
    def render_nginx(self) -> str:
        """deploy/nginx/nginx.conf with its placeholders filled as deploy/local/run fills them."""
        app1, app2 = self.apps
        values = {
            "NGINX_LISTEN": f"{self.edge.addr}:{NGINX_PORT}",
            "NGINX_STATUS_LISTEN": "127.0.0.1:8089",
            "NGINX_ACCESS_LOG": "logs/access.log",
            "NGINX_WRITE_RATE": "50r/s",
            "NGINX_WRITE_BURST": "100",
            "NGINX_LOGIN_RATE": "10r/m",
            "NGINX_LOGIN_BURST": "10",
            "NGINX_INGEST_RATE": "100r/s",
            "NGINX_INGEST_BURST": "200",
            "NGINX_LIVE_PER_ADDRESS": "10",
            "NGINX_LIVE_TOTAL": "1000",
            "NGINX_EXEMPT_LOOPBACK": "1",
        }
        for n, host in ((1, app1), (2, app2)):
            for service in ("blog", "orders", "stream"):
                values[f"{service.upper()}_UPSTREAM_{n}"] = f"{host.addr}:{PORTS[service]}"
        text = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
        for name, value in values.items():
            text = text.replace("${" + name + "}", value)
        left = re.search(r"\$\{[A-Z0-9_]+\}", text)
        if left:
            raise AssertionError(f"deploy/nginx/nginx.conf: {left.group(0)} has no value here")
        return text

    def retry_after_read_timeout(self, text: str) -> str:
        """nginx.conf where a GET whose replica stopped answering is retried on the other replica.

        A request sent to a host whose link died gets no answer and no reset: nginx learns of it only
        at ``proxy_read_timeout``. It passes the request to the next replica only while
        ``proxy_next_upstream_timeout`` has not run out - so that one must be the longer, or the client
        of an idempotent GET gets nginx's 504. Where the shipped config has it shorter, this run uses a
        longer one and says so in ``nginx_patched`` (the test warns): the change belongs in
        deploy/nginx/nginx.conf.
        """
        read = re.search(r"^\s*proxy_read_timeout (\d+)s;", text, re.M)
        connect = re.search(r"^\s*proxy_connect_timeout (\d+)s;", text, re.M)
        nxt = re.search(r"^(\s*proxy_next_upstream_timeout )(\d+)s;", text, re.M)
        if not (read and connect and nxt) or int(nxt.group(2)) == 0:
            return text
        needed = int(read.group(1)) + int(connect.group(1)) + 3
        if int(nxt.group(2)) >= needed:
            return text
        self.nginx_patched = (
            f"deploy/nginx/nginx.conf: proxy_next_upstream_timeout {nxt.group(2)}s is shorter than "
            f"proxy_read_timeout {read.group(1)}s, so a GET sent to a host that went silent is answered 504 "
            f"instead of being retried on the other replica; this run used {needed}s"
        )
        return text[: nxt.start()] + f"{nxt.group(1)}{needed}s;" + text[nxt.end() :]

    def start_edge(self) -> None:
        prefix = self.cluster.dir / "nginx"
        (prefix / "logs").mkdir(parents=True)
        (prefix / "temp").mkdir()
        (prefix / "nginx.conf").write_text(self.retry_after_read_timeout(self.render_nginx()))
        self.cluster.spawn(
            self.edge,
            "nginx",
            [
                "nginx",
                "-e",
                "stderr",
                "-p",
                f"{prefix}/",
                "-c",
                str(prefix / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
        )
        wait_for(lambda: self._up(self.edge.addr, NGINX_PORT), 30, "nginx on the edge host")

    def access_log_entries(self) -> list[dict[str, Any]]:
        """nginx's access log on the edge host (JSON lines, deploy/nginx/nginx.conf's log_format)."""
        path = self.cluster.dir / "nginx" / "logs" / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines if line.strip()]
