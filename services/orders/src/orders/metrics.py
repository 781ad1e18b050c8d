"""The orders_* metrics (names are a contract with Prometheus rules and dashboards)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from asynccore.metrics import LATENCY_BUCKETS
from orders.states import Status

__all__ = [
    "BATCH_SIZE",
    "DLQ_MESSAGES",
    "LOCK_RETRIES",
    "LOCK_WAIT",
    "OUTBOX_BACKLOG",
    "OUTBOX_OLDEST_AGE",
    "PAYMENT_DURATION",
    "PAYMENT_ERRORS",
    "REFUNDS",
    "STOCKOUTS",
    "TRANSITIONS",
]

TRANSITIONS = Counter("orders_transitions_total", "Orders entering a status", ["to"])
STOCKOUTS = Counter("orders_stockouts_total", "Order attempts refused for lack of stock")
LOCK_RETRIES = Counter("orders_lock_retries_total", "Transactions retried after a lock conflict", ["reason"])
LOCK_WAIT = Histogram(
    "orders_lock_wait_seconds",
    "Time a placing call took, row-lock wait included (rows stay locked from its UPDATEs to commit)",
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "orders_batch_size",
    "Orders written by one batched transaction (orders.batching); 1 when load is light",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
OUTBOX_BACKLOG = Gauge("orders_outbox_backlog", "Outbox rows not yet published")
OUTBOX_OLDEST_AGE = Gauge("orders_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row")
PAYMENT_DURATION = Histogram(
    "orders_payment_duration_seconds", "Payment provider call latency", buckets=LATENCY_BUCKETS
)
PAYMENT_ERRORS = Counter("orders_payment_errors_total", "Failed payment provider calls")
DLQ_MESSAGES = Counter("orders_dlq_messages_total", "Messages dead-lettered after their last attempt")
REFUNDS = Counter(
    "orders_refunds_total",
    "Refunds the worker settled: refunded (money back), not_charged (nothing had been captured: the "
    "payment was voided), dead_lettered (gave up: money may still be owed, act on it)",
    ["outcome"],
)

# Every label value exists from start-up at 0, so rates and panels read 0 rather than "no data".
for _status in Status:
    TRANSITIONS.labels(_status.value)
for _reason in ("deadlock", "lock_timeout"):
    LOCK_RETRIES.labels(_reason)
for _outcome in ("refunded", "not_charged", "dead_lettered"):
    REFUNDS.labels(_outcome)
