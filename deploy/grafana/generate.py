"""Grafana dashboards as code: this file is the source, ``dashboards/*.json`` is its committed output.

Plain dicts rather than a dashboards library: the four dashboards use two panel types, and the JSON
Grafana provisions is then exactly what is reviewed. Queries use the metric names of the contract
and the recording rules in ``deploy/prometheus/rules/recording.yml``; ``deploy/tests/test_dashboards.py``
runs every query against a real Prometheus.

    uv run python deploy/grafana/generate.py          # rewrite dashboards/*.json
    uv run python deploy/grafana/generate.py --check  # exit 1 if the committed JSON is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"
FULL_WIDTH = 24
PANEL_HEIGHT = 8

Panel = dict[str, Any]


@dataclass(frozen=True)
class Q:
    """One PromQL query of a panel and its legend."""

    expr: str
    legend: str = ""


def _targets(queries: tuple[Q, ...]) -> list[dict[str, Any]]:
    return [
        {
            "datasource": DATASOURCE,
            "refId": chr(ord("A") + i),
            "expr": q.expr,
            "legendFormat": q.legend or "__auto",
            "range": True,
        }
        for i, q in enumerate(queries)
    ]


def timeseries(title: str, *queries: Q, unit: str = "short", description: str = "", width: int = 12) -> Panel:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": _targets(queries),
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": {"fillOpacity": 10, "showPoints": "never"}},
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "gridPos": {"w": width, "h": PANEL_HEIGHT},
    }


def stat(
    title: str,
    *queries: Q,
    unit: str = "short",
    description: str = "",
    width: int = 6,
    red_above: float | None = None,
    green_from: float | None = None,
) -> Panel:
    """A number per series; red from ``red_above`` up, and (with ``green_from``) red below it too."""
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if green_from is not None:
        steps = [{"color": "red", "value": None}, {"color": "green", "value": green_from}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [{**t, "range": False, "instant": True} for t in _targets(queries)],
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
        },
        "gridPos": {"w": width, "h": PANEL_HEIGHT // 2},
    }


def bar_gauge(title: str, *queries: Q, unit: str = "short", description: str = "", width: int = 12) -> Panel:
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [{**t, "range": False, "instant": True} for t in _targets(queries)],
        "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
        "options": {
            "orientation": "horizontal",
            "displayMode": "gradient",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        },
        "gridPos": {"w": width, "h": PANEL_HEIGHT},
    }


def dashboard(
    uid: str, title: str, description: str, sections: list[tuple[str, list[Panel]]]
) -> dict[str, Any]:
    """Lay sections out top to bottom: a row header each, panels filling 24 columns left to right."""
    panels: list[Panel] = []
    y = 0
    next_id = 1
    for row_title, row_panels in sections:
        panels.append(
            {
                "type": "row",
                "id": next_id,
                "title": row_title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"x": 0, "y": y, "w": FULL_WIDTH, "h": 1},
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row_panels:
            w, h = panel["gridPos"]["w"], panel["gridPos"]["h"]
            if x + w > FULL_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append({**panel, "id": next_id, "gridPos": {"x": x, "y": y, "w": w, "h": h}})
            next_id += 1
            x += w
            line_height = max(line_height, h)
        y += line_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["asyncstack"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "schemaVersion": 39,
        "version": 1,
        "links": [
            {
                "type": "dashboards",
                "title": "asyncstack",
                "tags": ["asyncstack"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def per_s(metric: str, by: str = "") -> str:
    """Per-second rate of a counter, summed over replicas (and grouped ``by`` labels)."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}[{RATE}]))"


def quantile(q: float, histogram: str) -> str:
    """The ``q`` quantile of a histogram across replicas."""
    return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket[{RATE}])))"


def red_by_route(service: str) -> list[Panel]:
    """The RED row every service dashboard opens with, per route template."""
    sel = f'service="{service}"'
    return [
        timeseries(
            "Requests/s by route",
            Q(f"service_route:http_requests:rate5m{{{sel}}}", "{{route}}"),
            unit="reqps",
        ),
        timeseries(
            "5xx ratio by route",
            Q(f"service_route:http_errors:ratio_rate5m{{{sel}}}", "{{route}}"),
            unit="percentunit",
            description="Share of 5xx responses over 5 minutes; a route that never failed is a flat 0.",
        ),
        timeseries(
            "p99 latency by route",
            Q(
                f'service_route:http_request_duration_seconds:quantile5m{{{sel}, quantile="0.99"}}',
                "{{route}}",
            ),
            unit="s",
        ),
        timeseries(
            "Latency quantiles (service)",
            Q(f"service:http_request_duration_seconds:quantile5m{{{sel}}}", "p{{quantile}}"),
            unit="s",
            description="Event streams (/api/live) are left out: they last as long as the client stays.",
        ),
    ]


def pools(service: str) -> list[Panel]:
    sel = f'service="{service}"'
    return [
        timeseries(
            "Pool connections in use / size",
            Q(f"sum by (pool) (db_pool_in_use{{{sel}}})", "{{pool}} in use"),
            Q(f"sum by (pool) (db_pool_size{{{sel}}})", "{{pool}} size"),
        ),
        timeseries("Pool waiters", Q(f"sum by (pool) (db_pool_waiting{{{sel}}})", "{{pool}}")),
    ]


OVERVIEW_INSTANCES = [
    stat("Instances up", Q("sum by (job) (up)", "{{job}}"), width=12),
    stat(
        "Instances down",
        Q("count(up == 0) or vector(0)", "down"),
        width=12,
        red_above=1,
        description="Scrape targets not answering (alert InstanceDown after 1 minute).",
    ),
]

OVERVIEW_RED = [
    timeseries("Requests/s by service", Q("service:http_requests:rate5m", "{{service}}"), unit="reqps"),
    timeseries(
        "5xx ratio by service",
        Q("service:http_errors:ratio_rate5m", "{{service}}"),
        unit="percentunit",
        description="Alert HighErrorRatio pages above 5% for 5 minutes.",
    ),
    timeseries(
        "p99 latency by service",
        Q('service:http_request_duration_seconds:quantile5m{quantile="0.99"}', "{{service}}"),
        unit="s",
        description="Objective: p99 at most 500 ms (streams excluded).",
    ),
    timeseries(
        "Responses/s by status",
        Q("sum by (service, status) (service_status:http_requests:rate5m)", "{{service}} {{status}}"),
        unit="reqps",
    ),
    timeseries(
        "Latency SLO burn rate",
        Q("service:http_requests_slow:ratio_rate1h / 0.01", "{{service}} 1h"),
        Q("service:http_requests_slow:ratio_rate5m / 0.01", "{{service}} 5m"),
        description="Share of requests over 500 ms divided by the 1% budget. 1 spends the budget in exactly "
        "30 days; 14.4 on both windows pages (LatencySLOBurnFast).",
    ),
    timeseries("Requests in flight", Q("sum by (service) (http_requests_in_flight)", "{{service}}")),
]

OVERVIEW_LOOP = [
    timeseries(
        "Event-loop lag (now)",
        Q("max by (service, instance) (event_loop_lag_seconds)", "{{instance}}"),
        unit="s",
        description="How late a 250 ms timer fired: anything blocking the loop shows here.",
    ),
    timeseries(
        "Event-loop lag p99 (5m)",
        Q("service_instance:event_loop_lag_seconds:p99_5m", "{{instance}}"),
        unit="s",
        description="Alert EventLoopLagHigh above 100 ms for 5 minutes.",
    ),
    timeseries("Background tasks running", Q("sum by (service) (background_tasks_running)", "{{service}}")),
    timeseries(
        "Background task failures/s",
        Q(per_s("background_task_failures_total", "service, task"), "{{service}} {{task}}"),
    ),
]

OVERVIEW_RESILIENCE = [
    timeseries(
        "Circuit breakers (0 closed, 1 open, 2 half-open)",
        Q("max by (name) (circuit_breaker_state)", "{{name}}"),
    ),
    timeseries(
        "Bulkhead rejections/s and retries/s",
        Q(per_s("bulkhead_rejected_total", "name"), "rejected {{name}}"),
        Q(per_s("retry_attempts_total", "name"), "retried {{name}}"),
    ),
]


# The front door as nginx itself counts it (stub_status through the NGINX Prometheus exporter, job
# nginx): every request, including those nginx answers without a service (limits, static errors).
OVERVIEW_NGINX = [
    timeseries(
        "nginx connections",
        Q("sum(nginx_connections_active)", "active"),
        Q("sum(nginx_connections_reading)", "reading"),
        Q("sum(nginx_connections_writing)", "writing"),
        Q("sum(nginx_connections_waiting)", "waiting (keep-alive)"),
        description="Client connections open at nginx: reading a request, writing a response (open "
        "/api/live streams stay here), or idle between requests.",
    ),
    timeseries(
        "nginx requests/s and connections/s",
        Q(per_s("nginx_http_requests_total"), "requests"),
        Q(per_s("nginx_connections_accepted"), "connections accepted"),
        Q(
            f"{per_s('nginx_connections_accepted')} - {per_s('nginx_connections_handled')}",
            "connections dropped",
        ),
        unit="reqps",
        description="Everything nginx served, the services' and its own answers (429, 503 from the "
        "limits) alike. Dropped connections (accepted, not handled) mean nginx ran out of "
        "worker_connections.",
    ),
]


def overview() -> dict[str, Any]:
    return dashboard(
        "asyncstack-overview",
        "asyncstack / Overview",
        "Is the stack healthy? RED per service, instances up, event-loop lag, latency-SLO burn, the front "
        "door.",
        [
            ("Instances", OVERVIEW_INSTANCES),
            ("Rate · Errors · Duration", OVERVIEW_RED),
            ("Front door (nginx)", OVERVIEW_NGINX),
            ("Event loop and background work", OVERVIEW_LOOP),
            ("Resilience", OVERVIEW_RESILIENCE),
        ],
    )


BLOG_CACHE = [
    timeseries(
        "Cache hit ratio by family",
        Q("family:blog_cache_hits:ratio_rate5m", "{{family}}"),
        Q(":blog_cache_hits:ratio_rate5m", "all"),
        unit="percentunit",
        description="Alert BlogCacheHitRatioCollapse below 50% for 10 minutes.",
    ),
    timeseries(
        "Cache lookups/s",
        Q(per_s("blog_cache_hits_total"), "hits"),
        Q(per_s("blog_cache_misses_total"), "misses"),
        unit="ops",
    ),
    timeseries(
        "Single-flight joins/s",
        Q(per_s("blog_cache_singleflight_joins_total", "family"), "{{family}}"),
        unit="ops",
        description="Readers that waited for another reader's fill instead of querying SQLite themselves: "
        "high during a stampede on a hot key.",
    ),
    timeseries(
        "Redis fallbacks/s and cache errors/s",
        Q(per_s("blog_cache_redis_fallbacks_total"), "served from SQLite"),
        Q(per_s("blog_cache_errors_total", "family"), "errors {{family}}"),
        unit="ops",
        description="Non-zero fallbacks mean Redis is unreachable and reads go to SQLite.",
    ),
]


# The Redis server itself (its INFO through redis_exporter, job redis). It holds the blog's cache and
# also the stream's aggregates and offsets, so these are server-wide numbers.
REDIS_SERVER = [
    timeseries(
        "Redis memory",
        Q("max(redis_memory_used_bytes)", "used"),
        Q("max(redis_memory_max_bytes)", "maxmemory (0: no limit)"),
        unit="bytes",
        description="Memory Redis holds for data. Near maxmemory, writes fail under noeviction (the "
        "docker-compose setting) and the blog serves from SQLite.",
    ),
    timeseries(
        "Redis commands/s",
        Q(per_s("redis_commands_processed_total"), "commands"),
        unit="ops",
        description="Every command the server ran: cache reads and fills, invalidations, the stream's "
        "flushes.",
    ),
    timeseries(
        "Redis keyspace hit ratio",
        Q(
            f"{per_s('redis_keyspace_hits_total')} / ({per_s('redis_keyspace_hits_total')}"
            f" + {per_s('redis_keyspace_misses_total')})",
            "hits / lookups",
        ),
        unit="percentunit",
        description="Key lookups that found their key, server-wide (every client of this Redis). The "
        "blog's own view per cache family is the 'Cache hit ratio by family' panel above.",
    ),
    timeseries(
        "Redis connected clients",
        Q("sum(redis_connected_clients)", "clients"),
        description="Open client connections: each replica's pool, the stream's, the exporter's own. "
        "A steady climb means connections leak.",
    ),
]


def blog() -> dict[str, Any]:
    return dashboard(
        "asyncstack-blog",
        "asyncstack / Blog",
        "Is the blog's cache doing its job? Hit ratio, stampede protection, Redis fallbacks, SQLite load, "
        "the Redis server.",
        [
            ("Traffic", red_by_route("blog")),
            ("Cache", BLOG_CACHE),
            ("Redis server", REDIS_SERVER),
            (
                "Storage",
                [
                    timeseries(
                        "SQLite queries/s by query",
                        Q(per_s("blog_db_queries_total", "query"), "{{query}}"),
                        unit="ops",
                    ),
                    *pools("blog"),
                ],
            ),
        ],
    )


ORDERS_FLOW = [
    timeseries(
        "Orders/s by status",
        Q(per_s("orders_transitions_total", "to"), "{{to}}"),
        unit="ops",
        description="Orders entering each status: pending, paid, fulfilled, cancelled, payment_failed.",
    ),
    timeseries("Stock-outs/s", Q(per_s("orders_stockouts_total"), "stock-outs"), unit="ops"),
    timeseries(
        "Lock retries/s by reason", Q(per_s("orders_lock_retries_total", "reason"), "{{reason}}"), unit="ops"
    ),
    timeseries(
        "Placing call time (row-lock wait included)",
        Q(quantile(0.5, "orders_lock_wait_seconds"), "p50"),
        Q(quantile(0.99, "orders_lock_wait_seconds"), "p99"),
        unit="s",
        description="How long a batch-placing call took, row-lock waits included.",
    ),
]

ORDERS_OUTBOX = [
    timeseries(
        "Outbox backlog",
        Q("max(orders_outbox_backlog)", "unsent rows"),
        description="Events written with their order but not yet confirmed by RabbitMQ.",
    ),
    timeseries(
        "Oldest unsent outbox event",
        Q("max(orders_outbox_oldest_age_seconds)", "age"),
        unit="s",
        description="Alert OutboxBacklogStale pages above 60 s for 2 minutes.",
    ),
    timeseries(
        "Payment provider latency",
        Q(quantile(0.5, "orders_payment_duration_seconds"), "p50"),
        Q(quantile(0.99, "orders_payment_duration_seconds"), "p99"),
        unit="s",
    ),
    timeseries("Payment errors/s", Q(per_s("orders_payment_errors_total"), "errors"), unit="ops"),
    stat(
        "Dead-lettered (1h)",
        Q("sum(increase(orders_dlq_messages_total[1h]))", "messages"),
        red_above=1,
        width=12,
        description="Order messages the worker gave up on (alert OrdersDeadLettered).",
    ),
    stat("Outbox backlog (now)", Q("max(orders_outbox_backlog)", "rows"), width=12),
]

# RabbitMQ's own view, from its built-in Prometheus plugin: per-queue depth from /metrics/detailed
# (job rabbitmq-queues), node-wide message rates from /metrics.
ORDERS_RABBITMQ = [
    timeseries(
        "RabbitMQ queue depth by queue",
        Q("sum by (queue) (rabbitmq_detailed_queue_messages_ready)", "{{queue}} ready"),
        Q("sum by (queue) (rabbitmq_detailed_queue_messages_unacked)", "{{queue}} unacked"),
        description="Ready: waiting for a consumer (a growing payments queue means the fulfilment "
        "worker is not keeping up or is down). Unacked: delivered to the worker, not yet acked. The "
        "retry queue holds messages waiting out their backoff; the dead-letter queue holds what the "
        "worker gave up on.",
    ),
    timeseries(
        "RabbitMQ messages/s",
        Q(per_s("rabbitmq_global_messages_received_total"), "published"),
        Q(per_s("rabbitmq_global_messages_delivered_total"), "delivered"),
        Q(per_s("rabbitmq_global_messages_redelivered_total"), "redelivered"),
        Q(per_s("rabbitmq_global_messages_dead_lettered_rejected_total"), "dead-lettered (rejected)"),
        unit="ops",
        description="Broker-wide: messages published to, delivered from and redelivered by RabbitMQ, and "
        "those rejected into a dead-letter exchange.",
    ),
]


# The MariaDB server itself (SHOW GLOBAL STATUS and VARIABLES through mysqld_exporter, job mariadb):
# server-wide, every database on it.
MARIADB_SERVER = [
    timeseries(
        "MariaDB connections",
        Q("max(mysql_global_status_threads_connected)", "connected"),
        Q("max(mysql_global_status_threads_running)", "running a query"),
        Q("max(mysql_global_variables_max_connections)", "max_connections"),
        description="Connections open and those executing right now. Pool size x replicas must stay "
        "well under max_connections.",
    ),
    timeseries(
        "MariaDB queries/s",
        Q(per_s("mysql_global_status_queries"), "all statements"),
        Q(
            per_s(
                'mysql_global_status_commands_total{command=~"select|insert|update|delete|call_procedure"}',
                "command",
            ),
            "{{command}}",
        ),
        unit="ops",
    ),
    timeseries(
        "MariaDB slow queries/s",
        Q(per_s("mysql_global_status_slow_queries"), "slower than long_query_time"),
        unit="ops",
        description="Statements that took longer than the server's long_query_time (10 s unless set); "
        "their text is in the slow query log when it is enabled.",
    ),
    timeseries(
        "InnoDB row lock waits",
        Q(per_s("mysql_global_status_innodb_row_lock_waits"), "waits/s"),
        Q("max(mysql_global_status_innodb_row_lock_current_waits)", "waiting now"),
        description="Statements that had to wait for a row lock another transaction held: the hot-row "
        "contention of stock updates (compare 'Lock retries/s by reason').",
    ),
]


def orders() -> dict[str, Any]:
    return dashboard(
        "asyncstack-orders",
        "asyncstack / Orders",
        "Are orders flowing? Status transitions, stock-outs, lock contention, outbox, payment, dead letters, "
        "RabbitMQ queues, the MariaDB server.",
        [
            ("Traffic", red_by_route("orders")),
            ("Orders", ORDERS_FLOW),
            ("Outbox and fulfilment", ORDERS_OUTBOX),
            ("RabbitMQ", ORDERS_RABBITMQ),
            ("MariaDB server", MARIADB_SERVER),
            ("Pools", pools("orders")),
        ],
    )


# Lag as the broker sees it: each partition's log end offset minus the stream's position in it (the
# next offset it will process, stored in Redis, not committed to Kafka). The join keeps the topics the
# stream consumes; max() folds a partition that moved between replicas into one series, and clamping
# at 0 hides a position scraped just after the log end offset.
BROKER_LAG = (
    "clamp_min(max by (topic, partition) (kafka_log_log_logendoffset)"
    " - on (topic, partition) max by (topic, partition) (stream_consumer_position), 0)"
)

STREAM_FLOW = [
    timeseries("Events/s by type", Q(per_s("stream_events_total", "type"), "{{type}}"), unit="ops"),
    timeseries(
        "Consumer lag per partition",
        Q("max by (partition) (stream_consumer_lag)", "p{{partition}}"),
        description="As the consumers see it. Alert StreamConsumerLagHigh when the sum passes 10k for "
        "5 minutes.",
    ),
    timeseries(
        "Consumer lag per partition (broker view)",
        Q(BROKER_LAG, "{{topic}} p{{partition}}"),
        description="The broker's log end offset minus the next offset the stream will process (its "
        "position, stored in Redis with the aggregates), for each partition a replica owns. Independent "
        "of the consumers' own lag report: it keeps growing when a consumer stalls without noticing.",
    ),
    timeseries(
        "Freshness",
        Q("max(stream_freshness_seconds)", "now - newest event"),
        unit="s",
        description="Age of the newest aggregated event: grows when consumers stall or producers stop.",
    ),
    timeseries(
        "Flush duration",
        Q(quantile(0.99, "stream_flush_duration_seconds"), "p99"),
        unit="s",
        description="One Redis transaction writing aggregate deltas and offsets together.",
    ),
    timeseries(
        "Outbox: dead letters and alerts to produce",
        Q("max(stream_outbox_backlog)", "in the outbox"),
        Q("sum(stream_outbox_relay_leader)", "relays holding the lease"),
        description="The relay holding the lease (one at a time) produces the outbox to Kafka; it "
        "grows when Kafka refuses them. A crashed leader's lease runs out after STREAM_RELAY_LEASE_MS.",
    ),
    timeseries(
        "Flushes waiting for the outbox relay",
        Q("max(stream_outbox_full)", "waiting"),
        description="1 while the outbox of dead letters and alerts is full and flushes wait for the "
        "relay to produce it to Kafka; alert StreamOutboxFull after 5 minutes.",
    ),
    timeseries(
        "Offset resets by reason (last hour)",
        Q("sum by (reason) (increase(stream_offset_resets_total[1h]))", "{{reason}}"),
        description="Stored offsets found outside the partition's log on assignment (topic recreated, "
        "retention, another cluster), reset under the configured policy; alert StreamOffsetReset. "
        "Depending on the policy, events were skipped or are read again.",
    ),
]

STREAM_KAFKA = [
    stat(
        "Active controller",
        Q("sum(kafka_controller_kafkacontroller_activecontrollercount)", "controllers"),
        width=8,
        green_from=1,
        red_above=2,
        description="KRaft controllers that are active: exactly 1 on a healthy cluster.",
    ),
    stat(
        "Offline partitions",
        Q("sum(kafka_controller_kafkacontroller_offlinepartitionscount)", "partitions"),
        width=8,
        red_above=1,
        description="Partitions without a leader: nothing can be produced to or consumed from them.",
    ),
    stat(
        "Partitions on the broker",
        Q("sum(kafka_server_replicamanager_partitioncount)", "partitions"),
        width=8,
    ),
    timeseries(
        "Messages in/s by topic",
        Q(per_s('kafka_server_brokertopicmetrics_messagesinpersec_total{topic!=""}', "topic"), "{{topic}}"),
        unit="ops",
        description="Records appended to each topic, as the broker counts them.",
    ),
    timeseries(
        "Bytes in/out per second",
        Q(per_s('kafka_server_brokertopicmetrics_bytesinpersec_total{topic=""}'), "in"),
        Q(per_s('kafka_server_brokertopicmetrics_bytesoutpersec_total{topic=""}'), "out"),
        unit="Bps",
    ),
    timeseries(
        "Broker CPU",
        Q('sum(rate(process_cpu_seconds_total{job="kafka"}[$__rate_interval]))', "cores"),
        description="CPU seconds per second of the broker's JVM.",
    ),
    timeseries(
        "Broker heap",
        Q('max(jvm_memory_heap_used_bytes{job="kafka"})', "used"),
        Q('max(jvm_memory_heap_max_bytes{job="kafka"})', "max"),
        unit="bytes",
        description="Used heap saw-tooths with garbage collection; a floor rising towards max means "
        "the heap is too small.",
    ),
]

STREAM_QUALITY = [
    timeseries(
        "Late, malformed and duplicate events/s",
        Q(per_s("stream_events_late_total"), "late"),
        Q(per_s("stream_events_invalid_total", "reason"), "malformed: {{reason}}"),
        Q(per_s("stream_events_duplicate_total"), "duplicate"),
        unit="ops",
    ),
    timeseries(
        "Event lateness",
        Q(quantile(0.5, "stream_event_lateness_seconds"), "p50"),
        Q(quantile(0.99, "stream_event_lateness_seconds"), "p99"),
        unit="s",
        description="How far behind its partition's newest event time a counted event arrived; "
        "beyond the allowed lateness an event is late and dead-lettered instead.",
    ),
    timeseries(
        "Dead-lettered events/s by reason",
        Q(per_s("stream_dlq_total", "reason"), "{{reason}}"),
        unit="ops",
        description="Alert StreamDeadLetterRatio above 5% of events for 10 minutes.",
    ),
    timeseries("Risk alerts/s by rule", Q(per_s("stream_risk_alerts_total", "rule"), "{{rule}}"), unit="ops"),
    bar_gauge(
        "Top products",
        Q("topk(10, max by (product) (stream_top_product_events))", "{{product}}"),
        description="Events per product in the current window, for the ten busiest products.",
    ),
]


def stream() -> dict[str, Any]:
    return dashboard(
        "asyncstack-stream",
        "asyncstack / Stream",
        "Is the analytics stream keeping up, and is its input clean? Throughput, lag, quality, top products, "
        "the Kafka broker.",
        [
            ("Traffic", red_by_route("stream")),
            ("Throughput and lag", STREAM_FLOW),
            ("Data quality", STREAM_QUALITY),
            ("Kafka broker", STREAM_KAFKA),
            ("Pools", pools("stream")),
        ],
    )


DASHBOARDS = {"overview": overview, "blog": blog, "orders": orders, "stream": stream}


def render() -> dict[str, str]:
    """File name → JSON text, exactly as committed."""
    return {
        f"{name}.json": json.dumps(build(), indent=2, sort_keys=True) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if dashboards/*.json differ from this code"
    )
    args = parser.parse_args()
    rendered = render()
    if args.check:
        stale = [
            n
            for n, text in rendered.items()
            if not (OUT_DIR / n).is_file() or (OUT_DIR / n).read_text() != text
        ]
        extra = sorted(p.name for p in OUT_DIR.glob("*.json") if p.name not in rendered)
        if stale or extra:
            print(f"stale: {stale}, not generated: {extra}; run: uv run python deploy/grafana/generate.py")
            sys.exit(1)
        return
    OUT_DIR.mkdir(exist_ok=True)
    for name, text in rendered.items():
        (OUT_DIR / name).write_text(text)


if __name__ == "__main__":
    main()
