"""docker-compose.yml: valid Compose, and every service, port and variable matches the contract.

No docker engine runs here, so the file is proven offline: against the Compose specification's JSON
schema (check-jsonschema's vendored copy), by ``docker-compose config`` (Debian's docker-compose, which
`make bootstrap` installs), and by comparing it with the contract table (docs/architecture.md), the
services' settings classes (an unknown variable would be silently ignored: ``extra="ignore"``), the
nginx template and the Prometheus targets. The Kafka broker is held to what the local stack and the
tests run: the release ``deploy/kafka/pom.xml`` pins (same major version), KRaft, no topic created on
first use, and its metrics through the same JMX exporter agent and rules.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings
from ruamel.yaml import YAML

from asynccore.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
# The contract table (docs/architecture.md), as the README states it.
DESIGN = ROOT / "README.md"
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
KAFKA_POM = ROOT / "deploy" / "kafka" / "pom.xml"
JMX_EXPORTER_RULES = "./deploy/kafka/jmx-exporter.yml"
JMX_EXPORTER_PORT = 9404

EXPECTED_SERVICES = {
    "nginx", "nginx-exporter",
    "blog1", "blog2", "orders1", "orders2", "orders-worker", "stream1", "stream2", "stream-loadgen",
    "payment-sandbox", "smtp-sink",
    "mariadb", "redis", "rabbitmq", "kafka",
    "redis-exporter", "mysqld-exporter",
    "prometheus", "alertmanager", "grafana",
}  # fmt: skip
# The servers' exporters: compose service -> (the server it reads, its port, the Prometheus job).
EXPORTERS = {
    "nginx-exporter": ("nginx", 9113, "nginx"),
    "redis-exporter": ("redis", 9121, "redis"),
    "mysqld-exporter": ("mariadb", 9104, "mariadb"),
}
# Containers whose image has nothing to probe them with (FROM scratch: no shell, no HTTP client), and so
# no healthcheck: Prometheus's up for their job is their health, and no container waits for them.
NO_HEALTHCHECK = {"nginx-exporter"}
ALERTMANAGER_YML = ROOT / "deploy" / "prometheus" / "alertmanager.yml"
# The replicas behind nginx: compose service -> the service it runs.
REPLICAS = {
    "blog1": "blog", "blog2": "blog",
    "orders1": "orders", "orders2": "orders",
    "stream1": "stream", "stream2": "stream",
}  # fmt: skip
# Fixed ports of the helper processes (helper brief): settings variable -> port.
HELPER_PORTS = {"ORDERS_WORKER_PORT": 8092, "PAYMENT_SANDBOX_PORT": 8090, "SMTP_PORT": 2525}
# Settings that carry a loopback / local-machine default but need no value in compose, and why.
NOT_NEEDED_IN_COMPOSE = {
    # The local stack's run dir: read only to find the broker when KAFKA_BOOTSTRAP is unset, and
    # compose always sets KAFKA_BOOTSTRAP.
    "ASYNCSTACK_RUN_DIR",
    # The SMTP sink binds this address itself: 0.0.0.0 is already right in a container.
    "SMTP_SINK_HOST",
    # The blog's SQLite file: read only while BLOG_DATABASE_URL is unset, and compose sets it.
    "BLOG_DB_PATH",
}
# (compose service, variable) a process's settings class has but the process never reads.
NOT_READ_BY = {
    ("stream-loadgen", "REDIS_URL"),  # it only produces to Kafka with the stream's settings class
}
SECRET_WORDS = re.compile(r"SECRET|PASSWORD|PASS$|TOKEN")
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
REQUIRED_VAR = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]+\}$")


# --- loading ---------------------------------------------------------------------------------------
@cache
def compose() -> dict[str, Any]:
    return dict(YAML(typ="safe").load(COMPOSE_FILE.read_text()))


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


@cache
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(text: str) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``, with .env.example's
    values (what a deploy that copied it would get)."""

    def one(match: re.Match[str]) -> str:
        value = env_example().get(match["name"], "")
        if value or match["op"] is None:
            return value
        if match["op"].endswith("?"):
            raise AssertionError(f"{match['name']} is required but .env.example does not set it")
        return match["arg"]

    return INTERPOLATION.sub(one, text).replace("$$", "$")


def environment(service: str) -> dict[str, str]:
    env = services()[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: write environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def resolved_env(service: str) -> dict[str, str]:
    return {k: interpolate(v) for k, v in environment(service).items()}


def command(service: str) -> list[str]:
    cmd = services()[service].get("command", [])
    return [cmd] if isinstance(cmd, str) else list(cmd)


@cache
def console_scripts() -> dict[str, tuple[str, str]]:
    """Console script -> (workspace package, "module:function")."""
    scripts = {}
    for pyproject in [*ROOT.glob("services/*/pyproject.toml"), *ROOT.glob("libs/*/pyproject.toml")]:
        project = tomllib.loads(pyproject.read_text())["project"]
        for name, target in project.get("scripts", {}).items():
            scripts[name] = (project["name"], target)
    return scripts


def python_services() -> dict[str, str]:
    """Compose service -> the console script it runs (services built from ./Dockerfile)."""
    return {
        name: command(name)[0]
        for name, svc in services().items()
        if "build" in svc and command(name) and command(name)[0] in console_scripts()
    }


def settings_class(script: str) -> type[BaseSettings]:
    """The settings class the script's function uses, from the module that defines the function (a
    package may re-export its ``main``); a script whose module or function is missing fails here."""
    module_name, _, function = console_scripts()[script][1].partition(":")
    try:
        entry = getattr(importlib.import_module(module_name), function)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise AssertionError(f"{script}: {module_name}:{function} cannot be imported: {exc}") from exc
    module_name = entry.__module__
    module = importlib.import_module(module_name)
    found = {
        obj
        for obj in vars(module).values()
        # A service's settings extend ServiceSettings; a helper process (the load generator) may read
        # a few variables with a plain BaseSettings.
        if isinstance(obj, type)
        and issubclass(obj, BaseSettings)
        and obj not in (ServiceSettings, BaseSettings)
    }
    assert len(found) == 1, f"{script}: expected one settings class in {module_name}, found {found}"
    return found.pop()


def env_vars(cls: type[BaseSettings]) -> dict[str, Any]:
    """Environment variable -> field info, as pydantic-settings reads them."""
    prefix = cls.model_config.get("env_prefix", "")
    return {
        (field.alias if isinstance(field.alias, str) else prefix + name).upper(): field
        for name, field in cls.model_fields.items()
    }


def design_ports() -> dict[str, tuple[str, int]]:
    """From the contract table: service -> (port variable, port)."""
    row = next(
        line for line in DESIGN.read_text().splitlines() if line.startswith("| blog / orders / stream |")
    )
    names = ["blog", "orders", "stream"]
    ports = [int(p) for p in re.findall(r"`:(\d+)`", row)]
    variables = re.findall(r"`([A-Z]+_PORT)`", row)
    assert len(ports) == len(variables) == 3, row
    return dict(zip(names, zip(variables, ports, strict=True), strict=True))


def design_config_vars() -> set[str]:
    row = next(line for line in DESIGN.read_text().splitlines() if line.startswith("| config |"))
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", row))


def healthcheck_text(service: str) -> str:
    test = services()[service].get("healthcheck", {}).get("test", [])
    return " ".join(test) if isinstance(test, list) else str(test)


def is_one_shot(service: str) -> bool:
    return services()[service].get("restart") == "no"


def compose_cli() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    has_plugin = shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30
    )
    if has_plugin and has_plugin.returncode == 0:
        return ["docker", "compose"]
    pytest.fail(
        "neither docker-compose nor the docker compose plugin is installed (make bootstrap installs it)"
    )


# --- the file is valid Compose ------------------------------------------------------------------------
def test_compose_file_matches_the_compose_specification_schema() -> None:
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE_FILE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_docker_compose_config_parses_it_with_the_example_env() -> None:
    checked = subprocess.run(
        [*compose_cli(), "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    checked = subprocess.run(
        [*compose_cli(), "--env-file", str(empty), "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert checked.returncode != 0
    assert "in .env" in checked.stdout + checked.stderr, checked.stdout + checked.stderr


# --- services, health and start-up order ---------------------------------------------------------------
def test_the_stack_has_every_service_of_the_design() -> None:
    assert set(services()) == EXPECTED_SERVICES


def test_every_container_is_long_running_with_a_healthcheck() -> None:
    one_shots = {name for name in services() if is_one_shot(name)}
    assert not one_shots, f"one-shot containers: {one_shots} (the services create their Kafka topics)"
    unchecked = [
        name
        for name, svc in services().items()
        if not (svc.get("healthcheck", {}).get("test") and not svc["healthcheck"].get("disable"))
    ]
    assert sorted(unchecked) == sorted(NO_HEALTHCHECK), f"containers without a healthcheck: {unchecked}"
    waited_for = {dep for svc in services().values() for dep in svc.get("depends_on", {})}
    assert not waited_for & NO_HEALTHCHECK, "a container waits for one that has no healthcheck"


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES))
def test_dependencies_are_waited_for_by_health(name: str) -> None:
    depends = services()[name].get("depends_on", {})
    assert isinstance(depends, dict), f"{name}: depends_on must name a condition for each dependency"
    for dependency, spec in depends.items():
        expected = "service_completed_successfully" if is_one_shot(dependency) else "service_healthy"
        assert spec.get("condition") == expected, f"{name} -> {dependency}: condition must be {expected}"


def test_state_lives_in_named_volumes() -> None:
    declared = set(compose().get("volumes", {}))
    used = set()
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} mounts {source}: not a declared named volume"
                used.add(source)
    assert declared == used, f"declared but unused volumes: {declared - used}"
    for store, path in [("mariadb", "/var/lib/mysql"), ("redis", "/data"), ("rabbitmq", "/var/lib/rabbitmq"),
                        ("kafka", "/var/lib/kafka/data"), ("prometheus", "/prometheus"),
                        ("alertmanager", "/alertmanager"),
                        ("grafana", "/var/lib/grafana")]:  # fmt: skip
        targets = {v.split(":")[1] for v in services()[store].get("volumes", []) if not v.startswith(".")}
        assert path in targets, f"{store} keeps its state in {path}, which is not a named volume"


def test_blog_replicas_share_one_mariadb_database_and_no_volume() -> None:
    urls = {resolved_env(s)["BLOG_DATABASE_URL"] for s in ("blog1", "blog2")}
    assert len(urls) == 1
    url = urls.pop()
    assert url.startswith("mysql://") and url.endswith("@mariadb:3306/blog"), url
    for replica in ("blog1", "blog2"):
        assert not services()[replica].get("volumes"), f"{replica} keeps state of its own"
        assert "mariadb" in services()[replica]["depends_on"]
    init = ROOT / "deploy" / "mariadb" / "initdb" / "10-blog-database.sh"
    assert "CREATE DATABASE IF NOT EXISTS blog " in init.read_text()
    assert "./deploy/mariadb/initdb:/docker-entrypoint-initdb.d:ro" in services()["mariadb"]["volumes"]


# --- the contract: ports -------------------------------------------------------------------------------
def test_replicas_listen_on_the_contract_ports_everywhere_they_are_named() -> None:
    ports = design_ports()
    nginx = resolved_env("nginx")
    prometheus = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    for replica, service in REPLICAS.items():
        variable, port = ports[service]
        assert resolved_env(replica)[variable] == str(port), f"{replica}: {variable} must be {port}"
        assert f"127.0.0.1:{port}/" in healthcheck_text(replica), f"{replica}: healthcheck is not on :{port}"
        assert f"{replica}:{port}" in nginx.values(), f"nginx has no upstream {replica}:{port}"
        assert f"- {replica}:{port}" in prometheus, f"prometheus.yml does not scrape {replica}:{port}"
        assert command(replica) == [service]


def test_settings_defaults_agree_with_the_contract_ports() -> None:
    for service, (variable, port) in design_ports().items():
        fields = env_vars(settings_class(service))
        assert fields[variable].default == port, (
            f"{service}: {variable} defaults to {fields[variable].default}"
        )


def test_helper_processes_listen_on_their_fixed_ports() -> None:
    listening = {
        var: int(v) for s in python_services() for var, v in resolved_env(s).items() if var in HELPER_PORTS
    }
    assert listening == HELPER_PORTS
    assert "- orders-worker:8092" in (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert "127.0.0.1:8092/" in healthcheck_text("orders-worker")
    assert "127.0.0.1:8090/" in healthcheck_text("payment-sandbox")
    assert "2525" in healthcheck_text("smtp-sink")


def test_front_door_and_consoles_are_published_and_nothing_else() -> None:
    published = {name: svc["ports"] for name, svc in services().items() if svc.get("ports")}
    assert interpolate(published.pop("nginx")[0]) == "8080:8080"
    assert resolved_env("nginx")["NGINX_LISTEN"] == "8080"
    for name, port in [("prometheus", 9090), ("alertmanager", 9093), ("grafana", 3000), ("rabbitmq", 15672)]:
        assert published.pop(name) == [f"127.0.0.1:{port}:{port}"], f"{name}: publish on loopback only"
    assert not published, f"unexpected published ports: {published}"


def test_nginx_template_placeholders_are_all_given() -> None:
    template = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    placeholders = set(re.findall(r"\$\{([A-Z0-9_]+)\}", template))
    given = set(environment("nginx"))
    assert placeholders <= given, f"nginx.conf placeholders without a value: {placeholders - given}"
    mounts = services()["nginx"]["volumes"]
    assert "./deploy/nginx/nginx.conf:/etc/nginx/templates/nginx.conf.template:ro" in mounts
    assert environment("nginx")["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"


def test_every_prometheus_target_is_a_compose_service() -> None:
    prometheus = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    targets = re.findall(r"^\s*-\s+([A-Za-z0-9._-]+):(\d+)\s*$", prometheus, re.MULTILINE)
    assert targets
    for host, _port in targets:
        assert host in services(), f"prometheus.yml scrapes {host}, which is not a compose service"
    mounts = services()["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in mounts


# --- the contract: environment -------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(python_services()))
def test_every_variable_is_a_setting_of_the_process(name: str) -> None:
    known = set(env_vars(settings_class(python_services()[name])))
    unknown = set(environment(name)) - known
    assert not unknown, f"{name}: {sorted(unknown)} are not settings of {python_services()[name]} (ignored)"


@pytest.mark.parametrize("name", sorted(python_services()))
def test_local_machine_defaults_are_replaced(name: str) -> None:
    """A default that means "this machine" (loopback, /tmp, the local broker) is wrong in a container."""
    env = environment(name)
    for variable, field in env_vars(settings_class(python_services()[name])).items():
        default = str(
            field.default.get_secret_value() if isinstance(field.default, SecretStr) else field.default
        )
        local = "127.0.0.1" in default or "localhost" in default or default.startswith("/tmp/")
        ignored = variable in NOT_NEEDED_IN_COMPOSE or (name, variable) in NOT_READ_BY
        if (local or variable == "KAFKA_BOOTSTRAP") and not ignored:
            assert variable in env, f"{name}: {variable} keeps its local default {default!r}"


@pytest.mark.parametrize("name", [*sorted(REPLICAS), "orders-worker"])
def test_contract_services_get_every_contract_variable_they_read(name: str) -> None:
    fields = set(env_vars(settings_class(python_services()[name])))
    wanted = (design_config_vars() | {v for v, _ in design_ports().values()}) & fields
    missing = wanted - set(environment(name))
    assert not missing, f"{name} reads {sorted(missing)} but compose does not set them"


@pytest.mark.parametrize("name", [*sorted(REPLICAS), "orders-worker"])
def test_secrets_come_from_the_env_file(name: str) -> None:
    env = environment(name)
    for variable, field in env_vars(settings_class(python_services()[name])).items():
        if field.annotation is SecretStr or SecretStr in getattr(field.annotation, "__args__", ()):
            assert variable in env, f"{name}: secret {variable} keeps its development default"
            assert REQUIRED_VAR.match(env[variable]), f"{name}: {variable} must be ${{VAR:?…}} from .env"


def test_no_secret_is_written_inline() -> None:
    for name in services():
        for variable, value in environment(name).items():
            if SECRET_WORDS.search(variable):
                assert REQUIRED_VAR.match(value), f"{name}: {variable} must come from .env as ${{VAR:?…}}"
            parts = urlsplit(value) if "://" in value else None
            if parts and parts.password is not None:
                assert parts.password.startswith("${") or value.split("@")[0].rsplit(":", 1)[-1].startswith(
                    "${"
                ), f"{name}: {variable} has an inline password"


def test_env_example_names_every_required_variable() -> None:
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_FILE.read_text()))
    assert required <= set(env_example()), f".env.example lacks {required - set(env_example())}"


@pytest.mark.parametrize("name", [*sorted(python_services()), "nginx"])
def test_every_address_points_at_a_service_it_waits_for(name: str) -> None:
    depends = set(services()[name].get("depends_on", {}))
    for variable, value in resolved_env(name).items():
        if variable.endswith("_URL") and "://" in value:
            host = urlsplit(value).hostname
        elif variable.endswith(("_HOST", "_BOOTSTRAP")) or variable.endswith(("_UPSTREAM_1", "_UPSTREAM_2")):
            host = value.split(":")[0]
        else:
            continue
        if variable in ("BLOG_PUBLIC_URL", "BIND_HOST"):
            continue  # the address readers use / the one the process listens on: not a dependency
        assert host in services(), f"{name}: {variable} points at {host}, not a compose service"
        assert host in depends, f"{name}: {variable} needs {host}, but {name} does not wait for it"


# --- Kafka -------------------------------------------------------------------------------------------------
@cache
def pom_versions() -> dict[str, str]:
    """From deploy/kafka/pom.xml: ``kafka.version`` and each dependency's artifactId -> version."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(KAFKA_POM).getroot()
    section = root.find("m:properties", ns)
    assert section is not None, f"{KAFKA_POM.name} has no <properties>"
    properties = {el.tag.split("}")[1]: el.text or "" for el in section}
    versions = {"kafka.version": properties["kafka.version"]}
    for dep in root.iterfind("m:dependencies/m:dependency", ns):
        version = dep.findtext("m:version", "", ns)
        versions[dep.findtext("m:artifactId", "", ns)] = re.sub(
            r"\$\{([^}]+)\}", lambda m: properties[m[1]], version
        )
    return versions


def dockerfile_stage(target: str) -> str:
    """The text of one stage of the Dockerfile, ARG defaults before the first FROM substituted."""
    text = DOCKERFILE.read_text()
    preamble = text.split("\nFROM ", 1)[0]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", preamble, re.MULTILINE))
    stages = re.split(r"^(?=FROM )", text, flags=re.MULTILINE)
    found = [st for st in stages if re.match(rf"FROM \S+ AS {re.escape(target)}\s", st)]
    assert len(found) == 1, f"the Dockerfile has no single stage {target}"
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), found[0])


def major(version: str) -> str:
    return version.split(".")[0]


def test_kafka_is_the_major_version_the_local_stack_runs() -> None:
    kafka = services()["kafka"]
    assert kafka["build"].get("target") == "kafka", "kafka: build ./Dockerfile's kafka stage"
    base = re.match(r"FROM (\S+) AS kafka", dockerfile_stage("kafka"))
    assert base, "the kafka stage has no FROM line"
    image, _, tag = base[1].partition(":")
    assert image == "apache/kafka", f"the kafka stage starts from {base[1]}, not the Apache Kafka image"
    pinned = pom_versions()["kafka.version"]
    assert major(tag) == major(pinned), f"compose runs Kafka {tag}; deploy/kafka/pom.xml pins {pinned}"


def test_kafka_runs_in_kraft_mode_as_one_node() -> None:
    env = resolved_env("kafka")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env.get("CLUSTER_ID"), "KRaft storage is formatted with CLUSTER_ID"
    assert not [v for v in env if "ZOOKEEPER" in v], "KRaft: no ZooKeeper setting"
    assert not [n for n in services() if "zookeeper" in n]
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    for name, factor in env.items():
        if name.endswith("REPLICATION_FACTOR") or name.endswith("MIN_ISR"):
            assert factor == "1", f"kafka: {name} must be 1 on a single node"
    assert "/var/lib/kafka/data" in env["KAFKA_LOG_DIRS"].split(",")
    bootstraps = {
        name: e["KAFKA_BOOTSTRAP"] for name in services() if "KAFKA_BOOTSTRAP" in (e := resolved_env(name))
    }
    assert bootstraps and set(bootstraps.values()) == {"kafka:9092"}, bootstraps
    assert "kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in healthcheck_text("kafka")


def test_kafka_topics_are_created_by_the_services_not_on_first_use() -> None:
    assert environment("kafka")["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def topic_partitions() -> dict[str, dict[str, int]]:
    """Topic -> {process: partitions it creates the topic with when absent}, from the settings classes
    (``X_TOPIC`` names a topic; ``X_PARTITIONS`` or ``X_TOPIC_PARTITIONS`` its partition count), with
    compose's values where it sets them."""
    found: dict[str, dict[str, int]] = {}
    for name, script in python_services().items():
        if "KAFKA_BOOTSTRAP" not in environment(name):
            continue
        cls = settings_class(script)
        fields, env = env_vars(cls), resolved_env(name)
        for variable, field in fields.items():
            if not variable.endswith("_TOPIC"):
                continue
            topic = env.get(variable, str(field.default))
            for count_var in (f"{variable}_PARTITIONS", f"{variable.removesuffix('_TOPIC')}_PARTITIONS"):
                if count_var in fields:
                    found.setdefault(topic, {})[script] = int(env.get(count_var, fields[count_var].default))
    return found


def test_services_that_create_a_topic_agree_on_its_partitions() -> None:
    found = topic_partitions()
    assert found, "no service names the partitions of the topics it creates (X_PARTITIONS)"
    for topic, counts in found.items():
        assert len(set(counts.values())) == 1, f"{topic}: created with different partition counts {counts}"
    replicas = sum(1 for service in REPLICAS.values() if service == "stream")
    events = set(found.get("events", {}).values())
    assert events and events.pop() >= replicas, (
        f"the events topic needs a partition for each of {replicas} consumers"
    )


def test_kafka_metrics_come_from_the_jmx_exporter_agent_and_rules_of_the_local_stack() -> None:
    kafka = services()["kafka"]
    env = resolved_env("kafka")
    mounts = {v.split(":")[0]: v.split(":")[1] for v in kafka["volumes"]}
    rules_path = mounts.get(JMX_EXPORTER_RULES)
    assert rules_path, f"kafka does not mount {JMX_EXPORTER_RULES}"
    agent = re.search(rf"-javaagent:(\S+\.jar)={JMX_EXPORTER_PORT}:(\S+)", env.get("EXTRA_ARGS", ""))
    assert agent, f"the broker's command line (EXTRA_ARGS) loads no agent on :{JMX_EXPORTER_PORT}"
    assert agent[2] == rules_path, f"the agent reads {agent[2]}, the rules are mounted at {rules_path}"
    # Only the broker loads it: every Kafka CLI tool in the container reads KAFKA_OPTS, and a second
    # agent on the same port would stop the tool (the healthcheck among them).
    assert "javaagent" not in env.get("KAFKA_OPTS", "")
    stage = dockerfile_stage("kafka")
    version = pom_versions()["jmx_prometheus_javaagent"]
    added = re.search(r"^ADD (.*?)(?<!\\)$", stage, re.MULTILINE | re.DOTALL)
    assert added, "the kafka stage does not ADD the agent"
    words = added[1].replace("\\\n", " ").split()
    url = next(w for w in words if w.startswith("https://"))
    assert url.endswith(f"/jmx_prometheus_javaagent/{version}/jmx_prometheus_javaagent-{version}.jar"), (
        f"the image's agent ({url}) is not the one deploy/kafka/pom.xml pins ({version})"
    )
    assert url.startswith("https://repo1.maven.org/maven2/")
    assert any(re.fullmatch(r"--checksum=sha256:[0-9a-f]{64}", w) for w in words), "the agent is not verified"
    assert words[-1] == agent[1], f"the image puts the agent at {words[-1]}, the broker loads {agent[1]}"
    assert f"- kafka:{JMX_EXPORTER_PORT}" in PROMETHEUS_YML.read_text()


def test_rabbitmq_serves_prometheus_metrics_and_is_scraped() -> None:
    plugins = set(resolved_env("rabbitmq")["RABBITMQ_ENABLED_PLUGINS"].split(","))
    assert {"rabbitmq_prometheus", "rabbitmq_management"} <= plugins
    jobs = {
        job["job_name"]: job for job in YAML(typ="safe").load(PROMETHEUS_YML.read_text())["scrape_configs"]
    }
    scraped = {
        (job.get("metrics_path", "/metrics"), target)
        for job in jobs.values()
        for config in job.get("static_configs", [])
        for target in config["targets"]
    }
    assert ("/metrics", "rabbitmq:15692") in scraped, "the plugin's node-wide metrics are not scraped"
    assert ("/metrics/detailed", "rabbitmq:15692") in scraped, "per-queue metrics are not scraped"


def scrape_targets() -> dict[str, set[str]]:
    """Prometheus job -> its targets, from prometheus.yml."""
    jobs = YAML(typ="safe").load(PROMETHEUS_YML.read_text())["scrape_configs"]
    return {
        job["job_name"]: {target for config in job.get("static_configs", []) for target in config["targets"]}
        for job in jobs
    }


@pytest.mark.parametrize("name", sorted(EXPORTERS))
def test_each_server_has_a_pinned_exporter_that_prometheus_scrapes(name: str) -> None:
    server, port, job = EXPORTERS[name]
    image = services()[name]["image"]
    tag = image.partition(":")[2]
    assert re.fullmatch(r"v?\d+\.\d+\.\d+(-\w+)?", tag), f"{name}: {image} is not pinned to a release"
    assert scrape_targets().get(job) == {f"{name}:{port}"}, f"job {job} does not scrape {name}:{port}"
    assert services()[name]["depends_on"] == {server: {"condition": "service_healthy"}}
    # The address of the server it reads, and never a password on its command line (ps shows those).
    text = " ".join(command(name)) + " " + " ".join(resolved_env(name).values())
    assert re.search(rf"\b{server}:\d+", text), f"{name} does not read {server}"
    assert not re.search(r"pass(word)?=", " ".join(command(name)), re.IGNORECASE)
    if name not in NO_HEALTHCHECK:
        assert f"127.0.0.1:{port}/" in healthcheck_text(name)


def test_prometheus_alerts_the_alertmanager_that_reads_the_repos_config() -> None:
    alerting = YAML(typ="safe").load(PROMETHEUS_YML.read_text())["alerting"]
    targets = {t for am in alerting["alertmanagers"] for c in am["static_configs"] for t in c["targets"]}
    assert targets == {"alertmanager:9093"}
    assert scrape_targets().get("alertmanager") == {"alertmanager:9093"}
    alertmanager = services()["alertmanager"]
    assert re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", alertmanager["image"])
    assert (
        "./deploy/prometheus/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro"
        in alertmanager["volumes"]
    )
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in command("alertmanager")
    assert "--cluster.listen-address=" in command("alertmanager"), "one node: no gossip port"
    assert "127.0.0.1:9093/-/ready" in healthcheck_text("alertmanager")
    if shutil.which("amtool") is None:
        pytest.fail("amtool is not installed (Debian package 'prometheus-alertmanager'; `make bootstrap`)")
    checked = subprocess.run(
        ["amtool", "check-config", str(ALERTMANAGER_YML)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_no_mock_broker_is_left() -> None:
    for path in (COMPOSE_FILE, ENV_EXAMPLE, DOCKERFILE, PROMETHEUS_YML):
        assert "mock" not in path.read_text().lower(), f"{path.name} still mentions a mock broker"


def test_grafana_is_provisioned_from_the_repo() -> None:
    mounts = services()["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in mounts
    provider = YAML(typ="safe").load(
        (ROOT / "deploy/grafana/provisioning/dashboards/asyncstack.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    datasource = YAML(typ="safe").load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


# --- the image --------------------------------------------------------------------------------------------
def test_every_python_service_runs_a_script_the_image_installs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    installed = set(re.findall(r"--package (\S+)", dockerfile))
    for name, script in python_services().items():
        assert console_scripts()[script][0] in installed, (
            f"{name} runs {script}, not installed by the Dockerfile"
        )
    built = {n for n, s in services().items() if "build" in s}
    assert set(python_services()) | {"kafka"} == built
    for name in built - {"kafka"}:
        assert services()[name]["build"].get("target") == "runtime", f"{name}: build target runtime"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("!")
    ]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.removeprefix("**/")) for p in prefixes
                   for pat in patterns)  # fmt: skip

    copied = re.findall(
        r"^COPY (?!--from)(?:--\S+ )*(\S+(?: \S+)*) \S+$", (ROOT / "Dockerfile").read_text(), re.M
    )
    sources = [src for line in copied for src in line.split()]
    assert sources, "no COPY lines found in the Dockerfile"
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
        assert not ignored(src), f".dockerignore excludes {src}, which the Dockerfile copies"
    for kept in ["services/blog/src/blog/__init__.py", "libs/asynccore/src/asynccore/app.py"]:
        assert not ignored(kept), f".dockerignore excludes {kept}"
    for dropped in [".env", ".venv", ".git", "services/blog/tests", "deploy"]:
        assert ignored(dropped), f".dockerignore lets {dropped} into the build context"


def test_image_is_slim_python_311_with_a_frozen_venv_and_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, re.MULTILINE)
    # kafka (the broker, compose's target kafka) is not part of the Python image's build.
    assert [name for _, name in stages if name != "kafka"] == ["uv", "builder", "runtime"]
    assert stages[-1][1] == "runtime", "runtime must stay the last stage: the default target"
    assert "ARG PYTHON_VERSION=3.11" in dockerfile
    assert dict((n, i) for i, n in stages)["runtime"] == "python:${PYTHON_VERSION}-slim-bookworm"
    syncs = re.findall(r"uv sync ([^\n]+)", dockerfile)
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs)
    runtime = dockerfile.split(" AS runtime", 1)[1]
    users = re.findall(r"^USER (\S+)$", runtime, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}, "the runtime stage must end as a non-root user"
    assert "COPY --from=builder /app/.venv /app/.venv" in runtime
