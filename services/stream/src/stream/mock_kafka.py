"""A client for the local mock Kafka cluster (``deploy/local/kafka_mock.py --control``), for tests and
benchmarks in a checkout: start a private broker, create topics on demand, stop it by closing stdin.

The launcher's control mode answers each ``name:partitions`` line with ``ok name`` (and takes a broker
down or up on ``down:<id>`` / ``up:<id>``); closing stdin stops the broker, so a crashed test or
benchmark can never leave one behind.
"""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path

__all__ = ["LAUNCHER", "MockKafka"]

LAUNCHER = Path(__file__).resolve().parents[4] / "deploy" / "local" / "kafka_mock.py"


class MockKafka:
    """A private mock cluster; ``bootstrap`` is its address."""

    def __init__(self, start_timeout_s: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "--control"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.bootstrap = self._line(timeout=start_timeout_s)

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("mock Kafka launcher did not answer")
        line = self.proc.stdout.readline().strip()
        if not line:
            raise RuntimeError(f"mock Kafka launcher exited with {self.proc.wait(5)}")
        return line

    def create_topic(self, name: str, partitions: int) -> None:
        self._control(f"{name}:{partitions}", name)

    def set_down(self, broker_id: int = 1) -> None:
        """A broker outage: its connections drop and new ones are refused; what it holds is kept."""
        self._control(f"down:{broker_id}", f"down:{broker_id}")

    def set_up(self, broker_id: int = 1) -> None:
        self._control(f"up:{broker_id}", f"up:{broker_id}")

    def _control(self, line: str, subject: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n")
        self.proc.stdin.flush()
        answer = self._line(timeout=10)
        if answer != f"ok {subject}":
            raise RuntimeError(f"{line}: {answer}")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
