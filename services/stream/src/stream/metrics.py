"""The stream service's Prometheus metrics (names are a contract with dashboards and alert rules)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ALERTS",
    "DLQ",
    "DUPLICATES",
    "EVENTS",
    "FLUSH_SECONDS",
    "FRESHNESS",
    "INVALID",
    "LAG",
    "LATE",
    "TOP_PRODUCTS",
]

EVENTS = Counter("stream_events_total", "Events counted into the aggregates", ["type"])
LATE = Counter("stream_events_late_total", "Events behind the watermark, not counted (sent to the DLQ)")
INVALID = Counter("stream_events_invalid_total", "Malformed events (sent to the DLQ)", ["reason"])
DUPLICATES = Counter("stream_events_duplicate_total", "Events whose event_id was already counted")
LAG = Gauge("stream_consumer_lag", "Records not yet processed, per assigned partition", ["partition"])
FRESHNESS = Gauge("stream_freshness_seconds", "Now minus the newest event time this process aggregated")
DLQ = Counter("stream_dlq_total", "Messages produced to the dead-letter topic", ["reason"])
FLUSH_SECONDS = Histogram(
    "stream_flush_duration_seconds",
    "One batch's Redis transaction (read, aggregate, MULTI/EXEC)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
ALERTS = Counter("stream_risk_alerts_total", "Risk alerts raised", ["rule"])
TOP_PRODUCTS = Gauge(
    "stream_top_product_events",
    "Page views of the 10 most viewed products in the current 5-minute window",
    ["product"],
)
