"""Event-time buckets: 1-minute tumbling windows, 5-minute hopping windows, lateness classes.

Everything is keyed by the bucket's start in epoch milliseconds, so a window is a plain range of
minute keys and a hopping window is just the last five of them (panes), summed at query time.
"""

from __future__ import annotations

__all__ = [
    "HOP_MINUTES",
    "HOUR_MS",
    "LATENESS_BOUNDS_MS",
    "LATENESS_LABELS",
    "MINUTE_MS",
    "hop_window",
    "minute_of",
    "minutes_between",
]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
HOP_MINUTES = 5

# How far behind the partition's newest event time a counted event was: upper bounds, then +Inf.
LATENESS_BOUNDS_MS: tuple[int, ...] = (0, 1_000, 5_000, 15_000, 30_000, 60_000, 300_000)
LATENESS_LABELS: tuple[str, ...] = (*(f"le_{b // 1000}s" for b in LATENESS_BOUNDS_MS), "gt")


def minute_of(ts_ms: int) -> int:
    return ts_ms - ts_ms % MINUTE_MS


def minutes_between(from_ms: int, to_ms: int) -> range:
    """Start of every minute that overlaps ``[from_ms, to_ms)``."""
    return range(minute_of(from_ms), to_ms, MINUTE_MS)


def hop_window(end_ms: int, size_minutes: int = HOP_MINUTES) -> range:
    """The minutes of the hopping window (hop: 1 minute) that ends with the minute containing ``end_ms``."""
    last = minute_of(end_ms)
    return range(last - (size_minutes - 1) * MINUTE_MS, last + MINUTE_MS, MINUTE_MS)
