"""A locustfile whose imports are slow (a busy CI box took 23 s) still runs for its whole --run-time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

LOCUSTFILE = """
import time
started = time.monotonic()
while time.monotonic() - started < 3:  # imports that keep the CPU 3 s, the gevent loop not turning
    pass
import loadtests.scenarios.common  # noqa: F401  (registers the fix under test)
from locust import HttpUser, constant, task


class Idle(HttpUser):
    host = "http://127.0.0.1:9"
    wait_time = constant(0.5)

    @task
    def nothing(self) -> None:
        pass
"""


def test_a_slow_import_does_not_end_the_run_at_once(tmp_path: Path) -> None:
    locustfile = tmp_path / "slow_import.py"
    locustfile.write_text(LOCUSTFILE)
    locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"
    argv = [locust, "-f", str(locustfile), "--headless", "-u", "1", "-r", "1", "--run-time", "2s"]
    done = subprocess.run([*argv, "--only-summary"], capture_output=True, text=True, timeout=60, check=False)
    log = done.stderr
    assert "Run time limit set to 2 seconds" in log, log[-2000:]
    set_at = _stamp(log, "Run time limit set")
    reached_at = _stamp(log, "--run-time limit reached")
    assert reached_at - set_at >= 1.9, (
        f"the run ended {reached_at - set_at:.2f} s after it began:\n{log[-2000:]}"
    )


def _stamp(log: str, text: str) -> float:
    line = next(line for line in log.splitlines() if text in line)
    # "[2026-12-07 13:15:51,806] host/INFO/locust.main: ..."
    stamp = line[1 : line.index("]")]
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:23]) / 1000
