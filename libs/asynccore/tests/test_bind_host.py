"""Where a service listens: loopback unless ``BIND_HOST`` says otherwise (a container says 0.0.0.0).

A laptop's ``make run`` must not expose the services' own ports, which skip nginx's limits, to the
network: only the front door is meant to be reached from outside.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import psutil
import pytest

from asynccore.settings import ServiceSettings
from asynccore.testing import ServiceProcess, free_port

APP = Path(__file__).parent / "apps" / "drain_service.py"


def listening_addresses(pid: int) -> set[str]:
    return {
        conn.laddr.ip
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }


async def listens_on(env: dict[str, str]) -> set[str]:
    port = free_port()
    service = ServiceProcess(
        [sys.executable, str(APP)],
        env={"DRAIN_PORT": str(port), **env},
        health_url=f"http://127.0.0.1:{port}/healthz",
        name="drain",
    )
    await service.start(timeout=20)
    try:
        assert service.pid is not None
        return listening_addresses(service.pid)
    finally:
        await service.stop()


def test_the_default_bind_host_is_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIND_HOST", raising=False)
    assert ServiceSettings().bind_host == "127.0.0.1"


async def test_a_service_started_with_defaults_listens_on_loopback_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BIND_HOST", raising=False)
    addresses = await listens_on({})
    assert addresses, "the service listens somewhere"
    assert all(ipaddress.ip_address(ip).is_loopback for ip in addresses), addresses


async def test_bind_host_opens_a_service_to_every_interface_when_asked() -> None:
    assert await listens_on({"BIND_HOST": "0.0.0.0"}) == {"0.0.0.0"}
