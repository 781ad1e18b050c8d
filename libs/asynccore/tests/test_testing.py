"""The test helpers themselves, against real processes and sockets."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from asynccore.testing import RedisServer, ServiceProcess, TcpProxy, free_port, metric_value, wait_until

# A tiny HTTP service: /healthz, logs a line, on SIGTERM prints how many it got and exits 0 after a
# short drain (a second SIGTERM during the drain would be visible in the count).
SERVICE_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from aiohttp import web

    async def main(port):
        terms = 0
        stop = asyncio.Event()

        def on_term():
            nonlocal terms
            terms += 1
            stop.set()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_term)
        app = web.Application()
        app.router.add_get("/healthz", lambda r: web.Response(text="ok"))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("listening", port, "pid", os.getpid(), flush=True)
        await stop.wait()
        await asyncio.sleep(0.3)
        print("terms", terms, flush=True)
        await runner.cleanup()

    asyncio.run(main(int(sys.argv[1])))
    """
)


@pytest.fixture
def service_script(tmp_path: Path) -> str:
    path = tmp_path / "service.py"
    path.write_text(SERVICE_SCRIPT)
    return str(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_wait_until_returns_once_a_sync_or_async_predicate_holds() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await wait_until(lambda: loop.time() - start > 0.1, timeout=2)
    assert 0.1 <= loop.time() - start < 1.0

    calls = 0

    async def third_time_lucky() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    await wait_until(third_time_lucky, timeout=2, interval=0.01)
    assert calls == 3


async def test_wait_until_fails_after_the_timeout_naming_the_condition_and_last_error() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(AssertionError, match=r"flag set not true within 0\.2s"):
        await wait_until(lambda: False, timeout=0.2, message="flag set")
    assert loop.time() - start < 1.0

    def broken() -> bool:
        raise KeyError("missing")

    with pytest.raises(AssertionError, match="last error: KeyError"):
        await wait_until(broken, timeout=0.1)


async def test_wait_until_bounds_a_hanging_async_predicate() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(3600)
        return True

    with pytest.raises(AssertionError, match="last error: TimeoutError"):
        await wait_until(hangs, timeout=0.2)


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_port_is_never_one_an_outgoing_connection_could_take() -> None:
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = {free_port() for _ in range(200)}
    assert not any(low <= port <= high for port in ports)
    assert len(ports) > 150  # random, so parallel test processes rarely meet


def test_metric_value_reads_one_sample_by_labels() -> None:
    text = 'x_total{a="1",b="2"} 3.0\nx_total{a="9",b="2"} 7.0\n'
    assert metric_value(text, "x_total", a="9") == 7.0
    assert metric_value(text, "x_total", b="2", a="1") == 3.0
    assert metric_value(text, "x_total", a="5") is None


async def test_service_process_waits_for_health_captures_output_and_stops_gracefully(
    service_script: str,
) -> None:
    port = free_port()
    proc = ServiceProcess(
        [sys.executable, service_script, str(port)], health_url=f"http://127.0.0.1:{port}/healthz"
    )
    await proc.start()
    try:
        assert proc.running
        assert f"listening {port}" in proc.output
    finally:
        await proc.stop()
    assert proc.returncode == 0
    assert "terms 1" in proc.output


async def test_sigterm_through_uv_run_arrives_once(service_script: str) -> None:
    """``uv run`` forwards SIGTERM itself, so it must not also be sent to the whole group."""
    port = free_port()
    proc = ServiceProcess(
        ["uv", "run", "--frozen", "python", service_script, str(port)],
        health_url=f"http://127.0.0.1:{port}/healthz",
        name="uv-service",
    )
    await proc.start(timeout=60)
    try:
        proc.kill(signal.SIGTERM)
        assert await proc.wait(timeout=10) == 0
    finally:
        await proc.stop()
    assert "terms 1" in proc.output


async def test_sigkill_takes_down_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)']); "
        f"open({str(pidfile)!r}, 'w').write(str(c.pid)); print('spawned', flush=True); time.sleep(3600)"
    )
    proc = ServiceProcess([sys.executable, "-c", script], name="parent")
    await proc.start()
    await wait_until(lambda: "spawned" in proc.output, timeout=10)
    child = int(pidfile.read_text())
    assert pid_alive(child)

    proc.kill()
    assert await proc.wait(timeout=5) == -signal.SIGKILL
    # The orphan is re-parented to init, which reaps it once it dies.
    await wait_until(lambda: not pid_alive(child), timeout=5, message="grandchild killed")


async def test_start_fails_fast_with_the_output_when_the_process_dies() -> None:
    port = free_port()
    proc = ServiceProcess(
        [sys.executable, "-c", "import sys; print('bad config'); sys.exit(2)"],
        health_url=f"http://127.0.0.1:{port}/healthz",
        name="dies",
    )
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)dies exited with 2.*bad config"):
        await proc.start(timeout=20)
    assert time.monotonic() - started < 5


async def test_start_times_out_when_health_never_answers() -> None:
    proc = ServiceProcess(
        [sys.executable, "-c", "import time; time.sleep(3600)"],
        health_url=f"http://127.0.0.1:{free_port()}/healthz",
        name="silent",
    )
    with pytest.raises(TimeoutError, match="silent"):
        await proc.start(timeout=0.5)
    assert not proc.running


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(2):
            return await reader.readexactly(len(payload))
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tcp_proxy_forwards_cuts_live_connections_and_restores_on_the_same_port(echo_port: int) -> None:
    proxy = TcpProxy("127.0.0.1", echo_port)
    await proxy.start()
    try:
        port = proxy.port
        assert await roundtrip(port, b"hello" * 1000) == b"hello" * 1000

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        async with asyncio.timeout(2):
            assert await reader.readexactly(4) == b"ping"

        await proxy.cut()
        async with asyncio.timeout(2):
            # The live connection is gone: EOF or reset, never silence.
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await reader.readexactly(1)
        writer.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

        await proxy.restore()
        assert proxy.port == port
        assert await roundtrip(port, b"back") == b"back"
    finally:
        await proxy.close()


async def test_redis_server_is_private_and_comes_back_at_the_same_url() -> None:
    server = RedisServer()
    await server.start()
    client = Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    try:
        await client.set("k", "v")
        await server.stop()
        with pytest.raises(RedisConnectionError):
            await client.get("k")
        await server.start()
        await wait_until(client.ping, timeout=5)
        assert await client.get("k") is None  # no persistence: a fresh server
    finally:
        await client.aclose()
        await server.stop()
