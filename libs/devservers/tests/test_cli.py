"""The console scripts the local stack and compose run keep their names and targets."""

from __future__ import annotations

import tomllib
from pathlib import Path

from devservers import payment, smtp

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_scripts_start_the_dev_servers() -> None:
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts == {"payment-sandbox": "devservers.payment:main", "smtp-sink": "devservers.smtp:main"}
    assert callable(payment.main) and callable(smtp.main)
    assert payment.SandboxSettings().payment_sandbox_port == 8090
    assert (smtp.SinkSettings().smtp_port, smtp.SinkSettings().smtp_sink_http_port) == (2525, 8025)
