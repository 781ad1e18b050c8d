"""The stub_status → Prometheus conversion, as plain functions (the stack tests scrape the real thing)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
from conftest import ROOT


def load_exporter() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "nginx_exporter", ROOT / "deploy" / "local" / "nginx_exporter.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


exporter = load_exporter()

# Verbatim from nginx 1.22 (note the trailing spaces nginx writes).
STUB_STATUS = (
    "Active connections: 3 \nserver accepts handled requests\n 17 16 42 \nReading: 0 Writing: 1 Waiting: 2 \n"
)


def test_stub_status_is_parsed() -> None:
    assert exporter.parse_stub_status(STUB_STATUS) == {
        "active": 3,
        "accepted": 17,
        "handled": 16,
        "requests": 42,
        "reading": 0,
        "writing": 1,
        "waiting": 2,
    }


def test_a_page_that_is_not_stub_status_is_refused() -> None:
    with pytest.raises(ValueError, match="not a stub_status page"):
        exporter.parse_stub_status("<html>502 Bad Gateway</html>")


def test_metrics_use_the_official_exporter_names() -> None:
    text = exporter.render(exporter.parse_stub_status(STUB_STATUS))
    samples = dict(line.split() for line in text.splitlines() if not line.startswith("#"))
    assert samples == {
        "nginx_up": "1",
        "nginx_connections_accepted": "17",
        "nginx_connections_active": "3",
        "nginx_connections_handled": "16",
        "nginx_connections_reading": "0",
        "nginx_connections_waiting": "2",
        "nginx_connections_writing": "1",
        "nginx_http_requests_total": "42",
    }
    assert "# TYPE nginx_http_requests_total counter" in text
    assert "# TYPE nginx_connections_active gauge" in text


def test_nginx_down_is_only_nginx_up_zero() -> None:
    lines = [line for line in exporter.render(None).splitlines() if not line.startswith("#")]
    assert lines == ["nginx_up 0"]
