"""Several "hosts" on this machine: network namespaces joined by a bridge, each with its own address.

The multi-host test (``test_multihost.py``) builds, with iproute2 only:

- a bridge ``br0`` in a namespace of its own (the switch), and one namespace per host - ``data``,
  ``app1``, ``app2``, ``edge`` - each with an ``eth0`` (one end of a veth pair whose other end is a port
  of the bridge) on a /24 picked at random in 10.200-250.x (one not already routed here);
- a last veth from this (the root) namespace to the bridge, so the test itself is a client on the same
  network: it talks to nginx on the edge host and checks the data host's MariaDB like any other machine.

Cutting a host's link is ``ip link set <its bridge port> down``: its packets go nowhere, the sockets on
either side stay open and learn nothing (no RST, no ICMP), as when a cable or a switch port dies.

The data host runs new instances of every engine (Redis, MariaDB, RabbitMQ, Apache Kafka) with their
data in the cluster's temporary directory, bound to its address; namespaces isolate ports, so each uses
its standard port without meeting the machine's own servers on loopback. Every name carries a random
tag (``asw-<6 hex>-data`` ...); :meth:`Cluster.close` kills every process inside the namespaces,
deletes them (and so their veths) and the temporary directory, whatever state the build reached.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("data", "app1", "app2", "edge")


class NamespacesRefused(Exception):
    """The kernel (or the sandbox) does not let us create network namespaces."""


def run(*argv: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[:500]}")
    return proc


def namespaces_refused() -> str | None:
    """Why namespaces cannot be used here (a one-line reason), or None when they can."""
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    name = f"asw-{secrets.token_hex(3)}-probe"
    try:
        proc = run("ip", "netns", "add", name, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns add failed: {exc}"
    if proc.returncode != 0:
        return f"the kernel refuses network namespaces (ip netns add: {proc.stderr.strip()[:200]})"
    run("ip", "netns", "del", name, check=False)
    return None


def used_networks() -> list[ipaddress.IPv4Network]:
    out = run("ip", "-4", "-o", "addr", "show").stdout + run("ip", "-4", "route", "show").stdout
    nets = []
    for word in out.split():
        with contextlib.suppress(ValueError):
            if "/" in word or word.count(".") == 3:
                nets.append(ipaddress.ip_network(word, strict=False))
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def pick_subnet() -> ipaddress.IPv4Network:
    used = used_networks()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /24 in 10.200-250.x")


def tcp_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def reachable(addr: str) -> bool:
    """A TCP connect to a closed port is refused at once by a reachable host (no ping here)."""
    try:
        with socket.create_connection((addr, 9), timeout=1.0):
            return True
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not true within {timeout:g}s")
        time.sleep(interval)


@dataclass
class Host:
    name: str
    ns: str
    addr: str
    port: str  # its port on the bridge, in the bridge namespace


@dataclass
class Proc:
    host: Host
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Cluster:
    """The namespaces, the bridge, and every process started in them. Use as a context manager."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="asw-")))
    hosts: dict[str, Host] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    subnet: ipaddress.IPv4Network | None = None
    client_addr: str = ""
    _namespaces: list[str] = field(default_factory=list)
    _root_link: str = ""

    # --- network ------------------------------------------------------------------------------------
    @property
    def bridge_ns(self) -> str:
        return f"asw-{self.tag}-br"

    def _add_ns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def build_network(self) -> None:
        self.subnet = pick_subnet()
        addrs = list(self.subnet.hosts())
        prefix = self.subnet.prefixlen
        self._add_ns(self.bridge_ns)
        run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, name in enumerate(HOSTS):
            ns = f"asw-{self.tag}-{name}"
            self._add_ns(ns)
            port = f"p-{name}"
            run(
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                self.bridge_ns,
            )
            run("ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
            addr = str(addrs[i])
            run("ip", "-n", ns, "addr", "add", f"{addr}/{prefix}", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            self.hosts[name] = Host(name, ns, addr, port)
        # This namespace joins the network as a client (the test, an operator's laptop).
        self._root_link = f"asw{self.tag}"
        self.client_addr = str(addrs[-1])
        run(
            "ip",
            "link",
            "add",
            self._root_link,
            "type",
            "veth",
            "peer",
            "name",
            "p-client",
            "netns",
            self.bridge_ns,
        )
        run("ip", "-n", self.bridge_ns, "link", "set", "p-client", "master", "br0", "up")
        run("ip", "addr", "add", f"{self.client_addr}/{prefix}", "dev", self._root_link)
        run("ip", "link", "set", self._root_link, "up")
        for host in self.hosts.values():
            wait_for(functools.partial(reachable, host.addr), 10, f"{host.name} ({host.addr}) is reachable")

    def set_link(self, host: Host, up: bool) -> None:
        """Plug or unplug a host's cable: its port on the bridge goes up or down."""
        run("ip", "-n", self.bridge_ns, "link", "set", host.port, "up" if up else "down")

    # --- processes ------------------------------------------------------------------------------------
    def spawn(
        self,
        host: Host,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> Proc:
        log = self.dir / "logs" / f"{host.name}-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
        full_env.update(env or {})
        with log.open("ab") as out:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", host.ns, *argv],
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(host, name, popen, log)
        self.procs.append(proc)
        return proc

    def exec(self, host: Host, *argv: str, timeout: float = 60.0, input_: str | None = None) -> str:
        proc = subprocess.run(
            ["ip", "netns", "exec", host.ns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{host.name}: {' '.join(argv)} exited {proc.returncode}: {proc.stderr[-800:]}"
            )
        return proc.stdout

    def kill_host(self, host: Host) -> None:
        """SIGKILL every process running in a host's namespace (the machine died)."""
        for pid in self.ns_pids(host.ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            if proc.host is host:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(5)

    @staticmethod
    def ns_pids(ns: str) -> list[int]:
        out = run("ip", "netns", "pids", ns, check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    def check_alive(self) -> None:
        dead = [p for p in self.procs if p.popen.poll() is not None]
        if dead:
            raise AssertionError(
                "exited early: "
                + "; ".join(f"{p.host.name}/{p.name} rc={p.popen.returncode}: {self.tail(p)}" for p in dead)
            )

    @staticmethod
    def tail(proc: Proc, chars: int = 1500) -> str:
        try:
            return proc.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # --- teardown -------------------------------------------------------------------------------------
    def close(self) -> None:
        # Politely first (a server flushes its log), then every process left in our namespaces (epmd
        # and other daemons leave the process group), then the namespaces (and with them the veths).
        for proc in self.procs:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
        for ns in self._namespaces:
            for _ in range(3):
                pids = self.ns_pids(ns)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.3)
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)
        if self._root_link:
            run("ip", "link", "del", self._root_link, check=False)
        for ns in reversed(self._namespaces):
            run("ip", "netns", "del", ns, check=False)
        if os.environ.get("ASW_KEEP_DIR"):
            print(f"multihost: kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
