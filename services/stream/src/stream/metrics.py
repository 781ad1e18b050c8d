"""The stream service's Prometheus metrics (names are a contract with dashboards and alert rules)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from asynccore.metrics import bucket_labels, cumulative_buckets
from stream.windows import LATENESS_BOUNDS_MS

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
    "LATENESS",
    "LIVE_LIMITS",
    "LIVE_REFUSED",
    "LIVE_STREAMS",
    "OUTBOX_BACKLOG",
    "OUTBOX_FULL",
    "POSITION",
    "RELAY_LEADER",
    "RESETS",
    "RESET_REASONS",
    "RESET_SKIPPED",
    "TOP_PRODUCTS",
]

EVENTS = Counter("stream_events_total", "Events counted into the aggregates", ["type"])
LATE = Counter("stream_events_late_total", "Events behind the watermark, not counted (sent to the DLQ)")
INVALID = Counter("stream_events_invalid_total", "Malformed events (sent to the DLQ)", ["reason"])
DUPLICATES = Counter("stream_events_duplicate_total", "Events whose event_id was already counted")
LAG = Gauge(
    "stream_consumer_lag",
    "Log end offset minus the next offset to process, per assigned partition (as kafka-consumer-groups)",
    ["partition"],
)
POSITION = Gauge(
    "stream_consumer_position",
    "The next offset this process will process (its stored offset), per assigned partition",
    ["topic", "partition"],
)
FRESHNESS = Gauge(
    "stream_freshness_seconds",
    "Now minus the newest event time aggregated from the partitions this process holds (NaN: none yet)",
)
RESETS = Counter(
    "stream_offset_resets_total",
    "Stored offsets found outside their partition's log, handled by STREAM_OFFSET_RESET",
    ["reason"],
)
RESET_SKIPPED = Counter(
    "stream_offset_reset_skipped_records_total",
    "Records never processed because of an offset reset (deleted before being read, or skipped by 'latest')",
    ["reason"],
)
RESET_REASONS = ("ahead_of_log_end", "behind_log_start")
for _reason in RESET_REASONS:  # exported at 0 from the start, so the first reset is an increase
    RESETS.labels(_reason)
    RESET_SKIPPED.labels(_reason)
OUTBOX_BACKLOG = Gauge(
    "stream_outbox_backlog",
    "Dead letters and alerts in the outbox, not yet produced (0 but on the relay leader)",
)
RELAY_LEADER = Gauge("stream_outbox_relay_leader", "1 on the replica whose relay holds the outbox lease")
OUTBOX_FULL = Gauge("stream_outbox_full", "1 while flushes wait for the relay to drain a full outbox")
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
LIVE_STREAMS = Gauge("stream_live_streams", "Open /api/live streams on this process")
LIVE_REFUSED = Counter(
    "stream_live_refused_total",
    "/api/live streams refused (503) at STREAM_LIVE_MAX_PER_CLIENT or STREAM_LIVE_MAX",
    ["limit"],
)
LIVE_LIMITS = ("per_client", "total")
for _limit in LIVE_LIMITS:
    LIVE_REFUSED.labels(_limit)


_LABELS = bucket_labels(b / 1000 for b in LATENESS_BOUNDS_MS)


class _Lateness(Collector):
    """``stream_event_lateness_seconds``: how far behind its partition's newest event time each
    counted event arrived (0 for one that advanced it) — the lateness distribution.

    The aggregation already puts every event in a lateness class (its buckets are the classes), so a
    batch adds its per-class counts here as plain ints, turned into a histogram when scraped: an
    ``observe`` per event would cost more than the rest of its aggregation.
    """

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENESS_BOUNDS_MS) + 1)  # per class, the last one beyond every bound
        self.sum_ms = 0

    def add(self, by_class: Mapping[int, int], sum_ms: int) -> None:
        for lateness_class, n in by_class.items():
            self.counts[lateness_class] += n
        self.sum_ms += sum_ms

    def collect(self) -> Iterator[Metric]:
        histogram = HistogramMetricFamily(
            "stream_event_lateness_seconds",
            "How far behind its partition's newest event time each counted event arrived",
            labels=[],
        )
        histogram.add_metric([], cumulative_buckets(_LABELS, self.counts), self.sum_ms / 1000)
        yield histogram


LATENESS = _Lateness()
REGISTRY.register(LATENESS)
