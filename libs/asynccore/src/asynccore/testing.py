# The public API takes ``timeout=`` arguments on purpose: tests read better as ``stop(timeout=5)``.
# ruff: noqa: ASYNC109
"""Test helpers that use real processes and real sockets, never mocks.

* :func:`wait_until` — wait on a condition with a deadline instead of sleeping and hoping.
* :func:`free_port` — a loopback port nobody listens on, so tests never collide with the running stack.
* :class:`ServiceProcess` — a service as a real subprocess: start and wait for health, kill, stop.
* :class:`TcpProxy` — a loopback TCP forwarder in front of a shared server; ``cut()`` is an outage
  for whoever talks through it, without touching the server other tests use.
* :class:`RedisServer` — a private, throwaway ``redis-server`` for tests that stop Redis.
* :func:`metric_value` — one sample out of a ``/metrics`` page.
* :func:`server_url` — where the shared MariaDB / RabbitMQ / Redis of this machine answer, and as whom.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import signal
import socket
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "RedisServer",
    "ServiceProcess",
    "TcpProxy",
    "free_port",
    "metric_value",
    "server_url",
    "state_dir",
    "wait_until",
]

_OUTPUT_TAIL_CHARS = 4000


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "",
) -> None:
    """Poll ``predicate`` (sync or async) until it is truthy; ``AssertionError`` after ``timeout``.

    An exception from the predicate counts as "not yet" (a server still starting refuses connections),
    and the last one is named in the failure so a broken predicate is still visible.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error: BaseException | None = None
    while True:
        remaining = deadline - loop.time()
        try:
            async with asyncio.timeout(max(remaining, 0.001)):
                result = predicate()
                if inspect.isawaitable(result):
                    result = await result
            if result:
                return
        except Exception as exc:
            last_error = exc
        if loop.time() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            detail = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise AssertionError(f"{what} not true within {timeout:g}s{detail}")
        await asyncio.sleep(min(interval, max(deadline - loop.time(), 0)))


def state_dir() -> Path:
    """Where ``deploy/local/ensure-services`` keeps the machine's servers (``ASYNCSTACK_STATE_DIR``)."""
    if explicit := os.environ.get("ASYNCSTACK_STATE_DIR"):
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/asyncstack")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "asyncstack"


def server_url(name: str) -> str:
    """``TEST_<name>_SERVER`` if set, else what ensure-services wrote for ``<name>_SERVER``.

    ``name`` is ``MYSQL`` (``mysql://asyncstack:…@127.0.0.1:3306``, no database), ``AMQP`` or ``REDIS``
    (no vhost or database). The MariaDB user's password exists only there: nothing defaults to root.
    """
    if explicit := os.environ.get(f"TEST_{name}_SERVER"):
        return explicit.rstrip("/")
    path = state_dir() / "servers.env"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise RuntimeError(
            f"{path} does not exist: run deploy/local/ensure-services (make test does)"
        ) from None
    for line in lines:
        key, _, value = line.partition("=")
        if key == f"{name}_SERVER":
            return value.strip().rstrip("/")
    raise RuntimeError(f"{path} has no {name}_SERVER: run deploy/local/ensure-services")


def _ephemeral_ports() -> range:
    """The ports the kernel hands to outgoing connections (Linux's ``ip_local_port_range``)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default
    return range(int(low), int(high) + 1)


# Below the ephemeral range: an outgoing connection (a client socket to MariaDB, Kafka, ...) never
# takes one of these between free_port() returning and the server binding it. CI once lost a run
# to exactly that on an OS-chosen port (36573).
_LISTEN_PORTS = range(20000, 32768)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on and no outgoing connection will take.

    Random below the kernel's ephemeral range, so parallel tests rarely pick the same one and a
    client socket opened meanwhile cannot steal it; probed by binding it once.
    """
    ephemeral = _ephemeral_ports()
    candidates = [p for p in _LISTEN_PORTS if not ephemeral.start <= p < ephemeral.stop]
    for _ in range(100):
        port = random.choice(candidates)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {_LISTEN_PORTS} after 100 tries")


def metric_value(metrics_text: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` whose labels include ``labels``, from Prometheus text; None if absent.

    ``name`` is the sample name, e.g. ``http_requests_total`` or ``x_seconds_count``.
    """
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


class ServiceProcess:
    """A real subprocess (e.g. ``["uv", "run", "blog"]``) in its own process group.

    ``env`` is added to the current environment. stdout and stderr go to one temporary file, readable
    at any time through :attr:`output`, so a failing test can show what the service logged.

    Signals other than SIGKILL go to the leader only: ``uv run`` forwards SIGTERM/SIGINT to its child,
    so signalling the whole group would deliver them twice and cut a graceful drain short. SIGKILL
    cannot be forwarded, so it goes to the whole group and leaves no orphans.
    """

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        health_url: str | None = None,
        name: str = "",
    ) -> None:
        self.argv = argv
        self.env = env or {}
        self.health_url = health_url
        self.name = name or argv[-1]
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._earlier_output = ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def output(self) -> str:
        """Everything the process wrote to stdout/stderr so far (across restarts)."""
        return self._earlier_output + self._read_log()

    def _read_log(self) -> str:
        if self._log is None:
            return ""
        fd = self._log.fileno()
        # pread leaves the file offset the child shares with us alone.
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def _output_tail(self) -> str:
        return self.output[-_OUTPUT_TAIL_CHARS:]

    async def start(self, timeout: float = 20.0) -> None:
        """Spawn the process; if ``health_url`` is set, return once it answers 200."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._release_log()
        self._log = tempfile.TemporaryFile(prefix=f"{self.name}-", suffix=".log")  # noqa: SIM115
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        if self.health_url is None:
            return
        try:
            await self._wait_healthy(self.health_url, timeout)
        except BaseException:
            self.kill()
            await self._reap(timeout=5.0)
            raise

    async def _wait_healthy(self, url: str, timeout: float) -> None:
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        probe_timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=probe_timeout) as session:
            while True:
                if self._proc.returncode is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self._proc.returncode} before {url} was healthy; "
                        f"output:\n{self._output_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
                if loop.time() >= deadline:
                    raise TimeoutError(
                        f"{self.name}: {url} not healthy within {timeout:g}s; output:\n{self._output_tail()}"
                    )
                await asyncio.sleep(0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (see the class docstring for who receives it); a no-op once it has exited."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                os.killpg(self._proc.pid, sig)
            elif self._proc.returncode is None:
                os.kill(self._proc.pid, sig)

    async def wait(self, timeout: float = 20.0) -> int:
        """Wait for the process to exit; its exit code (negative: killed by that signal)."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        async with asyncio.timeout(timeout):
            return await self._proc.wait()

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self._proc is None:
            return
        if self._proc.returncode is None:
            self.kill(signal.SIGTERM)
            try:
                await self.wait(timeout)
            except TimeoutError:
                self.kill(signal.SIGKILL)
        await self._reap(timeout)

    async def _reap(self, timeout: float) -> None:
        """Wait for the leader and kill anything it left behind in its group."""
        assert self._proc is not None
        with contextlib.suppress(TimeoutError):
            await self.wait(timeout)
        self.kill(signal.SIGKILL)
        await self.wait(timeout)
        self._release_log()  # output stays readable; the temporary file is closed

    def _release_log(self) -> None:
        """Keep what was captured in memory and close the temporary file."""
        if self._log is not None:
            self._earlier_output += self._read_log()
            self._log.close()
            self._log = None


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 to ``target_host:target_port``, for simulating an outage.

    Point the code under test at :attr:`port`. ``cut()`` closes the listener and aborts every live
    connection, so clients see a real connection loss and new connects are refused; ``restore()``
    listens again on the same port.
    """

    def __init__(self, target_host: str, target_port: int, *, connect_timeout_s: float = 5.0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.connect_timeout_s = connect_timeout_s
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def cut_off(self) -> bool:
        return self._server is None

    @property
    def connections(self) -> int:
        """Live client connections (each has an upstream twin)."""
        return len(self._handlers)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5.0)
        if server is not None:
            await server.wait_closed()

    async def close(self) -> None:
        await self.cut()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(client_w)
        upstream_w: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                upstream_r, upstream_w = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(upstream_w)
            if self._server is None:  # cut while we were connecting
                return
            pipes = [
                asyncio.create_task(self._pipe(client_r, upstream_w)),
                asyncio.create_task(self._pipe(upstream_r, client_w)),
            ]
            # When either direction ends, the connection is over: close both sides.
            _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for pipe in pending:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
        except (OSError, TimeoutError):
            pass
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.transport.abort()
            self._handlers.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


class RedisServer:
    """A private ``redis-server`` on a free loopback port, with no persistence.

    For tests that need Redis to go away: stop this one, never the shared server. The port is fixed
    at construction, so ``start()`` after ``stop()`` brings it back at the same :attr:`url`.
    """

    def __init__(self, executable: str = "redis-server") -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self._process = ServiceProcess(argv, name=f"redis-{self.port}")

    @property
    def output(self) -> str:
        return self._process.output

    async def start(self, timeout: float = 10.0) -> None:
        await self._process.start()
        await wait_until(self._answers_ping, timeout=timeout, message=f"redis-server on {self.port} ready")

    async def _answers_ping(self) -> bool:
        if not self._process.running:
            raise RuntimeError(f"redis-server exited: {self._process.output[-_OUTPUT_TAIL_CHARS:]}")
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return await reader.readline() == b"+PONG\r\n"
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self, timeout: float = 10.0) -> None:
        await self._process.stop(timeout)
