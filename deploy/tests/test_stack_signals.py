"""Stop signals on the stack's service processes: signalled twice, each still exits cleanly and soon.

A supervisor or a terminal's Ctrl-C signals a whole process group, and ``uv run`` forwards its own
copy, so a service often gets SIGTERM/SIGINT twice within a millisecond. A second signal used to cut
the drain short (exit 1), and the blog, whose aiosqlite threads outlived the cut-short close, then
never exited. Each service entry point gets two signals 1 ms apart, five times; the runner's
supervisor reports how it exited and starts it again.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import urllib.request

import psutil
import pytest
from conftest import PROCESS_PORTS, Stack, wait_for

# Five rounds, each waiting for the restarted processes to run long enough (SETTLED_S).
pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

PROCESSES = ["blog1", "orders1", "orders-worker", "payment-sandbox", "smtp-sink", "stream1"]
HTTP_PORTS = {"smtp-sink": "SMTP_SINK_HTTP_PORT"}  # the SMTP sink's probes are on its HTTP port
SIGNAL_PAIRS = [
    (signal.SIGTERM, signal.SIGTERM),
    (signal.SIGINT, signal.SIGINT),
    (signal.SIGTERM, signal.SIGINT),
    (signal.SIGINT, signal.SIGTERM),
    (signal.SIGTERM, signal.SIGTERM),
]
DRAIN_BOUND_S = 4.0  # the local stack's SHUTDOWN_TIMEOUT_S
# The supervisor takes three exits within 5 s of a start for a crash loop and stops the stack.
SETTLED_S = 5.5
RESTART_TIMEOUT_S = 90.0


def settled_listener(stack: Stack, port: int) -> psutil.Process:
    """The process listening on ``port``, once it has run long enough not to look like a crash loop."""
    found: list[psutil.Process] = []

    def settled() -> bool:
        try:
            proc = psutil.Process(stack.listener_pid(port))
            if time.time() - proc.create_time() < SETTLED_S:
                return False
        except (LookupError, psutil.Error):
            return False
        found[:] = [proc]
        return True

    wait_for(settled, RESTART_TIMEOUT_S, f"a settled listener on {port}")
    return found[0]


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def exit_reported(stack: Stack, name: str, since: int) -> int | None:
    """The exit status the supervisor of ``name`` reported after offset ``since`` of the runner's log."""
    pattern = re.compile(rf"^\S+ {re.escape(name)}(\.\d+)?\s+\| .* exited (\d+): restarting", re.MULTILINE)
    found = pattern.search(stack.output, since)
    return int(found.group(2)) if found else None


def test_a_service_signalled_twice_exits_cleanly_within_the_drain_bound(stack: Stack) -> None:
    signalled: list[str] = []
    try:
        for first, second in SIGNAL_PAIRS:
            for name in PROCESSES:
                proc = settled_listener(stack, stack.port(PROCESS_PORTS[name]))
                signalled.append(name)
                since = len(stack.output)
                sent_at = time.monotonic()
                os.kill(proc.pid, first)
                time.sleep(0.001)
                # A process with nothing to drain may be gone within the millisecond: nothing to resend.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, second)
                try:
                    proc.wait(DRAIN_BOUND_S)
                except psutil.TimeoutExpired:
                    pytest.fail(f"{name} still running {DRAIN_BOUND_S:g}s after {first.name}, {second.name}")
                took = time.monotonic() - sent_at
                reported = f"{name}'s exit reported"
                wait_for(lambda: exit_reported(stack, name, since) is not None, 10, reported)  # noqa: B023
                what = f"{name} after {first.name}, {second.name} (in {took:.2f}s)"
                assert exit_reported(stack, name, since) == 0, f"{what}:\n{stack.output[since:][-3000:]}"
    finally:
        # Every process serves again before the next test.
        for name in dict.fromkeys(signalled):
            port = stack.port(HTTP_PORTS.get(name, PROCESS_PORTS[name]))
            wait_for(lambda: healthy(port), RESTART_TIMEOUT_S, f"{name} serving again")  # noqa: B023
