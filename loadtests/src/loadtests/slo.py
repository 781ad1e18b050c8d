"""Service-level objectives for a locust run, checked against locust's own CSV stats.

A scenario's SLOs live next to its load settings (``loadtests/scenarios/<name>.toml``): a failure-ratio
ceiling for the whole run and p95/p99 ceilings per endpoint (locust's ``"METHOD name"`` keys).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Breach", "EndpointStats", "check", "read_stats"]


@dataclass(frozen=True)
class EndpointStats:
    key: str  # "GET /api/articles"
    requests: int
    failures: int
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Breach:
    what: str
    limit: float
    actual: float

    def __str__(self) -> str:
        return f"SLO missed: {self.what} = {self.actual:g} (limit {self.limit:g})"


def _number(value: str) -> float:
    return float(value) if value not in ("", "N/A") else 0.0


def read_stats(stats_csv: Path) -> dict[str, EndpointStats]:
    """Rows of locust's ``<prefix>_stats.csv`` keyed ``"METHOD name"``; the total is ``"Aggregated"``."""
    rows: dict[str, EndpointStats] = {}
    with stats_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            key = row["Name"] if row["Name"] == "Aggregated" else f"{row['Type']} {row['Name']}"
            rows[key] = EndpointStats(
                key=key,
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                p95_ms=_number(row["95%"]),
                p99_ms=_number(row["99%"]),
            )
    return rows


def check(stats: dict[str, EndpointStats], slo: dict[str, Any]) -> list[Breach]:
    """Every SLO the run missed; an endpoint named in the SLO but never requested is a miss too."""
    breaches: list[Breach] = []
    total = stats.get("Aggregated")
    if total is None or total.requests == 0:
        return [Breach("requests made", 1, 0)]
    ratio = total.failures / total.requests
    if ratio > slo.get("max_failure_ratio", 0.01):
        breaches.append(Breach("failure ratio", slo.get("max_failure_ratio", 0.01), round(ratio, 4)))
    for key, limits in slo.get("endpoints", {}).items():
        row = stats.get(key)
        if row is None or row.requests == 0:
            breaches.append(Breach(f"{key} requests", 1, 0))
            continue
        for pct in ("p95_ms", "p99_ms"):
            if pct in limits and getattr(row, pct) > limits[pct]:
                breaches.append(Breach(f"{key} {pct}", limits[pct], getattr(row, pct)))
    return breaches
