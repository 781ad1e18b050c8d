"""What the alternative apps count, shared by both: one event per (type, minute of its ``ts``).

The benchmark's pre-producer tallies the same predicate over what it produced, so each app's counts
are checked exactly. Malformed values (the load generator's mix has some) are skipped, not fatal.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import orjson

MINUTE_MS = 60_000


def countable(raw: bytes | None) -> dict[str, Any] | None:
    """The event if it is a JSON object with a string ``type`` and an integer ``ts`` (ms), else None."""
    try:
        event = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    if isinstance(event, dict) and isinstance(event.get("type"), str) and type(event.get("ts")) is int:
        return event
    return None


def report(counts: dict[tuple[str, int], int], counted: int, first_at: float, done_at: float) -> None:
    """The result line the benchmark reads: counts as ``{type: {minute_start_ms: n}}`` and times."""
    by_type: dict[str, dict[str, int]] = {}
    for (kind, start), n in counts.items():
        by_type.setdefault(kind, {})[str(start)] = n
    line = {"counted": counted, "first_at": first_at, "done_at": done_at, "counts": by_type}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


PROGRESS_EVERY = 10_000  # events between progress lines: a run stopped at the time limit still has a rate


def progress(counted: int, first_at: float) -> None:
    """A progress line: how many events were counted by now, so a run the benchmark stops at its time
    limit is measured over what it did count instead of being reported as a bound."""
    line = {"progress": counted, "first_at": first_at, "at": now()}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def now() -> float:
    return time.time()
