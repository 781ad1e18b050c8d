"""Prometheus rules: promtool accepts them, its unit tests fire every alert, and the rules and the
Grafana dashboards name only metrics the services promise (the metric contract below).

promtool is Debian's ``prometheus`` package (``make bootstrap`` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
# The operator's guide lives in the README ("Operating it").
README = ROOT / "README.md"

# The metric contract shared by the services, these rules and the dashboards (helper brief). A
# histogram is listed by its base name; its _bucket/_sum/_count series are implied.
COUNTERS_AND_GAUGES = {
    "http_requests_total",
    "http_requests_in_flight",
    "event_loop_lag_seconds",
    "background_tasks_running",
    "background_task_failures_total",
    "db_pool_size",
    "db_pool_in_use",
    "db_pool_waiting",
    "circuit_breaker_state",
    "circuit_breaker_opens_total",
    "bulkhead_rejected_total",
    "bulkhead_waiting",
    "retry_attempts_total",
    "auth_revocation_unpublished_total",
    "auth_revocation_unchecked_total",
    "blog_cache_hits_total",
    "blog_cache_misses_total",
    "blog_cache_singleflight_joins_total",
    "blog_cache_errors_total",
    "blog_cache_redis_fallbacks_total",
    "blog_db_queries_total",
    "orders_transitions_total",
    "orders_stockouts_total",
    "orders_lock_retries_total",
    "orders_outbox_backlog",
    "orders_outbox_oldest_age_seconds",
    "orders_payment_errors_total",
    "orders_dlq_messages_total",
    "stream_events_total",
    "stream_events_late_total",
    "stream_events_invalid_total",
    "stream_events_duplicate_total",
    "stream_consumer_lag",
    "stream_freshness_seconds",
    "stream_dlq_total",
    "stream_risk_alerts_total",
    "stream_outbox_full",
    "stream_outbox_backlog",
    "stream_outbox_relay_leader",
    # Proposed addition for the "top products" panel: events of each of the 10 busiest products in
    # the current window (bounded cardinality: a product leaving the top 10 is removed).
    "stream_top_product_events",
    # The next offset the stream will process per assigned partition (stored in Redis, not committed to
    # Kafka), and stored offsets found outside the log and reset.
    "stream_consumer_position",
    "stream_offset_resets_total",
    # Prometheus's own.
    "up",
}
# What the brokers export themselves. Kafka: the JMX exporter agent with deploy/kafka/jmx-exporter.yml's
# rules (job kafka). RabbitMQ: its built-in Prometheus plugin, node-wide on /metrics (job rabbitmq) and
# per queue on /metrics/detailed (job rabbitmq-queues).
BROKER_METRICS = {
    "kafka_log_log_logendoffset",
    "kafka_log_log_logstartoffset",
    "kafka_server_brokertopicmetrics_messagesinpersec_total",
    "kafka_server_brokertopicmetrics_bytesinpersec_total",
    "kafka_server_brokertopicmetrics_bytesoutpersec_total",
    "kafka_server_replicamanager_partitioncount",
    "kafka_controller_kafkacontroller_activecontrollercount",
    "kafka_controller_kafkacontroller_offlinepartitionscount",
    "jvm_memory_heap_used_bytes",
    "jvm_memory_heap_max_bytes",
    "process_cpu_seconds_total",
    "rabbitmq_global_messages_received_total",
    "rabbitmq_global_messages_delivered_total",
    "rabbitmq_global_messages_redelivered_total",
    "rabbitmq_global_messages_dead_lettered_rejected_total",
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_messages_unacked",
}
# What the servers' exporters export (the names are theirs): the NGINX Prometheus exporter (job nginx),
# redis_exporter (job redis) and mysqld_exporter (job mariadb).
EXPORTER_METRICS = {
    "nginx_connections_active",
    "nginx_connections_reading",
    "nginx_connections_writing",
    "nginx_connections_waiting",
    "nginx_connections_accepted",
    "nginx_connections_handled",
    "nginx_http_requests_total",
    "redis_memory_used_bytes",
    "redis_memory_max_bytes",
    "redis_commands_processed_total",
    "redis_keyspace_hits_total",
    "redis_keyspace_misses_total",
    "redis_connected_clients",
    "mysql_global_status_threads_connected",
    "mysql_global_status_threads_running",
    "mysql_global_variables_max_connections",
    "mysql_global_status_queries",
    "mysql_global_status_commands_total",
    "mysql_global_status_slow_queries",
    "mysql_global_status_innodb_row_lock_waits",
    "mysql_global_status_innodb_row_lock_current_waits",
}
HISTOGRAMS = {
    "http_request_duration_seconds",
    "event_loop_lag_observed_seconds",
    "orders_lock_wait_seconds",
    "orders_payment_duration_seconds",
    "stream_flush_duration_seconds",
    # How far behind its partition's newest event time each counted event arrived (data quality).
    "stream_event_lateness_seconds",
}
CONTRACT = (
    COUNTERS_AND_GAUGES
    | BROKER_METRICS
    | EXPORTER_METRICS
    | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
)

REQUIRED_ALERTS = {
    "InstanceDown",
    "HighErrorRatio",
    "LatencySLOBurnFast",
    "LatencySLOBurnSlow",
    "EventLoopLagHigh",
    "DBPoolSaturated",
    "OutboxBacklogStale",
    "OrdersDeadLettered",
    "StreamDeadLetterRatio",
    "StreamConsumerLagHigh",
    "StreamOutboxFull",
    "BlogCacheHitRatioCollapse",
}
SEVERITIES = {"page", "ticket"}

# --- naming the metrics a PromQL expression reads ---------------------------------------------------
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan", "e"}  # fmt: skip
_NAME_REGEX = re.compile(r'__name__\s*=~?\s*"([^"]*)"')


def metric_names(expr: str) -> set[str]:
    """The metric (or recorded series) names an expression selects; ``__name__`` regexes expanded
    against the contract."""
    names = set()
    for pattern in _NAME_REGEX.findall(expr):
        names |= {m for m in CONTRACT if re.fullmatch(pattern, m)} or {
            f"<no contract metric matches {pattern}>"
        }
    bare = _GROUPING.sub(" ", _RANGE.sub(" ", _MATCHERS.sub(" ", _STRING.sub('""', expr))))
    names |= {n for n in _IDENT.findall(bare) if n.lower() not in _KEYWORDS}
    return names


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [rule for path in RULE_FILES for group in load_yaml(path)["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every query of every dashboard."""
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed (Debian package 'prometheus'; `make bootstrap` installs it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


# --- tests --------------------------------------------------------------------------------------------
def test_the_name_extractor_sees_metrics_not_labels_functions_or_keywords() -> None:
    expr = (
        "sum by (service, le) "
        '(rate(http_request_duration_seconds_bucket{route!~"/api/live.*", le="0.5"}[5m]))'
        " / on (service) group_left service:http_requests:rate5m > bool 0.1"
        ' or sum(rate({__name__=~"blog_cache_(hits|misses)_total"}[5m] offset 1h)) * 0'
    )
    assert metric_names(expr) == {
        "http_request_duration_seconds_bucket",
        "service:http_requests:rate5m",
        "blog_cache_hits_total",
        "blog_cache_misses_total",
    }


def test_promtool_checks_the_rules() -> None:
    checked = promtool("check", "rules", *map(str, RULE_FILES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_checks_the_config_with_these_rules() -> None:
    checked = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for path in RULE_FILES:
        assert path.name in checked.stdout, f"prometheus.yml does not load {path.name}:\n{checked.stdout}"


def test_promtool_unit_tests_pass() -> None:
    checked = promtool("test", "rules", *map(str, RULE_TESTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_fires_in_a_unit_test_and_some_stay_silent() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    assert set(alerts()) <= fired, f"alerts no unit test fires: {sorted(set(alerts()) - fired)}"
    assert silent, "no unit test shows an alert staying silent on healthy series"


def test_the_required_alerts_exist() -> None:
    assert set(alerts()) >= REQUIRED_ALERTS, f"missing: {sorted(REQUIRED_ALERTS - set(alerts()))}"


@pytest.mark.parametrize("name", sorted(alerts()))
def test_alert_carries_severity_and_its_operator_text(name: str) -> None:
    rule = alerts()[name]
    assert rule.get("labels", {}).get("severity") in SEVERITIES, (
        f"{name}: severity must be one of {SEVERITIES}"
    )
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook"):
        assert annotations.get(key, "").strip(), f"{name}: no {key} annotation"


@pytest.mark.parametrize("name", sorted(alerts()))
def test_operating_guide_repeats_each_runbook_line(name: str) -> None:
    text = " ".join(README.read_text().split())
    runbook = " ".join(alerts()[name]["annotations"]["runbook"].split())
    assert name in text, f"README.md does not mention {name}"
    assert runbook in text, f"README.md does not carry {name}'s runbook line verbatim"


def test_rules_read_only_contract_metrics_and_recorded_series() -> None:
    known = CONTRACT | recorded()
    unknown = {
        (rule.get("record") or rule["alert"], name)
        for rule in rules()
        for name in metric_names(rule["expr"])
        if name not in known
    }
    assert not unknown, f"rules naming metrics outside the contract: {sorted(unknown)}"


def test_dashboards_read_only_contract_metrics_and_recorded_series() -> None:
    known = CONTRACT | recorded()
    unknown = {
        (f"{d}: {title}", n)
        for d, title, expr in panel_queries()
        for n in metric_names(expr)
        if n not in known
    }
    assert not unknown, f"panels naming metrics outside the contract: {sorted(unknown)}"


def jmx_exporter_names() -> list[re.Pattern[str]]:
    """The metric names deploy/kafka/jmx-exporter.yml's rules can produce, one regex per rule: each
    ``$N`` of a rule's name is its pattern's N-th group (a list of words expanded, anything else any
    text), lower-cased as ``lowercaseOutputName`` does."""
    config = load_yaml(ROOT / "deploy" / "kafka" / "jmx-exporter.yml")
    assert config.get("lowercaseOutputName") is True
    names = []
    for rule in config["rules"]:
        groups = re.findall(r"\(([^()]*)\)", rule["pattern"])

        def group(match: re.Match[str], groups: list[str] = groups) -> str:
            text = groups[int(match[1]) - 1]
            return f"(?:{text.lower()})" if re.fullmatch(r"[\w|]+", text) else ".+"

        names.append(re.compile(re.sub(r"\$(\d+)", group, re.escape(rule["name"]).replace(r"\$", "$"))))
    return names


@pytest.mark.parametrize("name", sorted(n for n in BROKER_METRICS if n.startswith(("kafka_", "jvm_"))))
def test_broker_metric_is_produced_by_a_jmx_exporter_rule(name: str) -> None:
    assert any(p.fullmatch(name) for p in jmx_exporter_names()), (
        f"no rule of deploy/kafka/jmx-exporter.yml produces {name}"
    )
