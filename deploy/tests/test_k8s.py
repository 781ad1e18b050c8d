"""deploy/k8s: both kustomize overlays render, every object is valid Kubernetes, and the deploy keeps
the contract.

No cluster runs here, so the manifests are proven offline:
- rendered by the real ``kustomize`` (built once with ``go install`` through the Go module proxy into
  ``~/.cache/asyncstack/bin``; nothing else is downloaded at test time);
- every built-in object validated against the Kubernetes OpenAPI schemas in strict mode (unknown fields
  are errors) by the ``kubernetes-validate`` package, which ships them; custom resources (Strimzi's
  Kafka, the Prometheus Operator's ServiceMonitor) have no schema there, so their apiVersion/kind must be
  on an explicit allow-list and their contents are checked against what the services expect;
- and against the project: probes on the contract paths and ports, the SIGTERM drain inside
  terminationGracePeriodSeconds, resources set, every variable a settings field and the same ones as
  docker-compose.yml, every secret from a secretKeyRef, a PodDisruptionBudget and an autoscaler per
  Deployment, the Ingress routing the contract table's paths, the scrape config.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic_settings import BaseSettings
from ruamel.yaml import YAML

from asynccore.app import STOP_GRACE_S
from asynccore.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("local", "production")
README = K8S / "README.md"
CONTRACT = ROOT / "README.md"  # DESIGN.md's contract table, as the README states it
COMPOSE_FILE = ROOT / "docker-compose.yml"
KAFKA_POM = ROOT / "deploy" / "kafka" / "pom.xml"

# kustomize, built from source through the Go module proxy (sigs.k8s.io/kustomize/api v0.21.x builds
# on the machine's Go 1.26; newer ones may want a newer Go). The first build fetches its modules
# (about 6 minutes on a busy 2-core box, once per machine); later runs find the binary.
KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_VERSION = "v5.8.1"
CACHE_BIN = Path(os.environ.get("ASYNCSTACK_CACHE_DIR", Path.home() / ".cache" / "asyncstack")) / "bin"
KUSTOMIZE = CACHE_BIN / f"kustomize-{KUSTOMIZE_VERSION}"
BUILD_TIMEOUT_S = 1200
RENDER_TIMEOUT_S = 120
# The oldest Kubernetes minor the manifests claim (README.md) and a recent one.
KUBERNETES_VERSIONS = ("1.30.0", "1.34.0")

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 300)

# Custom resources per overlay (apiVersion, kind): no built-in schema, so only these are allowed.
# The local overlay needs no operator at all.
ALLOWED_CUSTOM_RESOURCES: dict[str, set[tuple[str, str]]] = {
    "local": set(),
    "production": {
        ("kafka.strimzi.io/v1", "Kafka"),
        ("kafka.strimzi.io/v1", "KafkaNodePool"),
        ("kafka.strimzi.io/v1", "KafkaTopic"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
    },
}
SERVICES = {"blog", "orders", "orders-worker", "stream"}
# The third-party stand-ins (libs/devservers): local only. They keep their state in memory (charges
# taken, mail received), so they run as one replica each and have no autoscaler.
STAND_INS = {"payment-sandbox", "smtp-sink"}
DEPLOYMENTS = {"local": SERVICES | STAND_INS, "production": SERVICES}
# Console script -> the variable naming the port of its /healthz, /readyz and /metrics.
HTTP_PORT_VARIABLE = {
    "blog": "BLOG_PORT",
    "orders": "ORDERS_PORT",
    "orders-worker": "ORDERS_WORKER_PORT",
    "stream": "STREAM_PORT",
    "payment-sandbox": "PAYMENT_SANDBOX_PORT",
    "smtp-sink": "SMTP_SINK_HTTP_PORT",
}
# Variables a pod sets beyond docker-compose.yml's, and why.
BEYOND_COMPOSE = {
    # Stated next to terminationGracePeriodSeconds, so the drain the grace period covers is visible
    # (and checked below) rather than a default read from the code.
    "SHUTDOWN_TIMEOUT_S",
}
# Hold a credential: never a literal, always a secretKeyRef (SecretStr fields are found on their own).
CREDENTIAL_VARIABLES = {"REDIS_URL", "REVOCATION_URL", "MYSQL_URL", "AMQP_URL", "BLOG_DATABASE_URL"}
DATA_SERVICES = {"mariadb", "redis", "rabbitmq"}


# --- kustomize ------------------------------------------------------------------------------------------
def build_kustomize() -> Path:
    """The pinned kustomize, built once per machine into the cache dir (a failed build fails the test)."""
    if KUSTOMIZE.is_file() and os.access(KUSTOMIZE, os.X_OK):
        return KUSTOMIZE
    go = shutil.which("go")
    if go is None:
        pytest.fail(f"Go is not installed: needed once to build {KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}")
    CACHE_BIN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_BIN, prefix=".kustomize-build-") as gobin:
        # GOTOOLCHAIN=local: this machine's Go, never a toolchain download; GOFLAGS cleared so a
        # developer's -mod=vendor or similar cannot interfere.
        env = {**os.environ, "GOBIN": gobin, "GOTOOLCHAIN": "local", "GOFLAGS": "", "CGO_ENABLED": "0"}
        started = time.monotonic()
        try:
            built = subprocess.run(
                [go, "install", f"{KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}"],
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
                env=env,
                cwd=gobin,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"go install {KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION}: not done in {BUILD_TIMEOUT_S} s")
        assert built.returncode == 0, (
            f"go install {KUSTOMIZE_MODULE}@{KUSTOMIZE_VERSION} failed:\n{built.stderr[-3000:]}"
        )
        # An atomic rename: a concurrent run sees the old state or the finished binary, never half.
        os.replace(Path(gobin) / "kustomize", KUSTOMIZE)
        print(f"built {KUSTOMIZE} in {time.monotonic() - started:.0f} s")
    return KUSTOMIZE


@pytest.fixture(scope="session")
def kustomize() -> Path:
    return build_kustomize()


@pytest.fixture(scope="session")
def rendered(kustomize: Path) -> dict[str, list[dict[str, Any]]]:
    """Overlay -> the objects ``kustomize build`` renders for it."""
    out = {}
    for overlay in OVERLAYS:
        built = subprocess.run(
            [str(kustomize), "build", str(K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=RENDER_TIMEOUT_S,
        )
        assert built.returncode == 0, f"kustomize build overlays/{overlay}:\n{built.stderr}"
        out[overlay] = [doc for doc in YAML(typ="safe").load_all(built.stdout) if doc]
    return out


@pytest.fixture(scope="session")
def kubernetes_validate() -> ModuleType:
    try:
        return importlib.import_module("kubernetes_validate")
    except ModuleNotFoundError:
        pytest.fail(
            "the kubernetes-validate package is missing: it ships the Kubernetes JSON schemas these "
            "tests validate against offline; add it to the dev dependency group of the root "
            "pyproject.toml (uv add --dev kubernetes-validate) and run `uv sync`"
        )


def objects(rendered: dict[str, list[dict[str, Any]]], overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in rendered[overlay] if o["kind"] == kind}


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def the_container(deployment: dict[str, Any]) -> dict[str, Any]:
    found = containers(deployment)
    assert len(found) == 1, f"{deployment['metadata']['name']}: one container per pod expected"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    assert "envFrom" not in container, f"{container['name']}: name each variable (no envFrom)"
    entries = container.get("env", [])
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"{container['name']}: a variable is set twice: {names}"
    return {e["name"]: e for e in entries}


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    return {name: str(e["value"]) for name, e in env_of(container).items() if "value" in e}


# --- the project's own facts ----------------------------------------------------------------------------
@cache
def console_scripts() -> dict[str, str]:
    """Console script -> "module:function", from the workspace's packages."""
    scripts = {}
    for pyproject in [*ROOT.glob("services/*/pyproject.toml"), *ROOT.glob("libs/*/pyproject.toml")]:
        scripts.update(tomllib.loads(pyproject.read_text())["project"].get("scripts", {}))
    return scripts


@cache
def settings_class(script: str) -> type[BaseSettings]:
    """The one settings class of the script's module (as docker-compose.yml's test finds it)."""
    module_name, _, function = console_scripts()[script].partition(":")
    # The module that defines the entry point (orders.worker re-exports main from orders.worker.app).
    module = importlib.import_module(getattr(importlib.import_module(module_name), function).__module__)
    found = {
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseSettings)
        and obj not in (ServiceSettings, BaseSettings)
    }
    assert len(found) == 1, f"{script}: expected one settings class, found {found}"
    return found.pop()


def settings_fields(script: str) -> dict[str, Any]:
    """Environment variable -> field info, as pydantic-settings reads them."""
    cls = settings_class(script)
    prefix = cls.model_config.get("env_prefix", "")
    return {(prefix + name).upper(): field for name, field in cls.model_fields.items()}


@cache
def compose_env_by_script() -> dict[str, set[str]]:
    """Console script -> the variables docker-compose.yml gives the containers that run it."""
    compose = YAML(typ="safe").load(COMPOSE_FILE.read_text())
    by_script: dict[str, set[str]] = {}
    for service in compose["services"].values():
        command = service.get("command")
        if "build" in service and isinstance(command, list) and command and command[0] in console_scripts():
            names = set(service.get("environment", {}))
            assert by_script.setdefault(command[0], names) == names, f"{command[0]}: compose differs"
    return by_script


def contract_routes() -> dict[str, tuple[str, bool]]:
    """From the contract's front-door row: path -> (service, whether the path is a family ``…``)."""
    row = next(line for line in CONTRACT.read_text().splitlines() if line.startswith("| nginx front door |"))
    routes = {}
    for part in row.split("→", 1)[1].split(";"):
        paths, _, service = part.rpartition("→")
        service = service.strip(" |")
        assert service in SERVICES, f"contract row: unknown service {service!r} in {part!r}"
        for path, family in re.findall(r"(/[a-z/]*)(…)?", paths):
            routes[path] = (service, bool(family))
    assert len(routes) >= 10, routes
    return routes


def cpu_millis(quantity: str) -> float:
    text = str(quantity)
    return float(text[:-1]) if text.endswith("m") else float(text) * 1000


def memory_bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", str(quantity))
    assert match, f"unreadable memory quantity {quantity!r}"
    return float(match[1]) * units.get(match[2] or "", 1)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions with In) against a pod's or a Service's labels."""
    if not selector:
        return False
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", f"unsupported selector operator {expression}"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def service_selects(service: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = service["spec"].get("selector", {})
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --- kustomize and the schemas --------------------------------------------------------------------------
def test_kustomize_is_the_pinned_release(kustomize: Path) -> None:
    version = subprocess.run([str(kustomize), "version"], capture_output=True, text=True, timeout=30)
    assert version.stdout.strip() == KUSTOMIZE_VERSION, version.stdout + version.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_kubernetes(
    overlay: str, rendered: dict[str, list[dict[str, Any]]], kubernetes_validate: ModuleType
) -> None:
    problems = []
    custom = set()
    for obj in rendered[overlay]:
        key = (obj["apiVersion"], obj["kind"])
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                custom.add(key)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{name} (Kubernetes {version}): {exc.message} at {list(exc.path)}")
    assert not problems, "\n".join(problems)
    unexpected = custom - ALLOWED_CUSTOM_RESOURCES[overlay]
    assert not unexpected, (
        f"overlays/{overlay}: resources without a schema, not on the allow-list: {unexpected}"
    )


def test_strict_validation_refuses_an_unknown_field(kubernetes_validate: ModuleType) -> None:
    """The check above is worth something: a misspelt field is an error, not ignored."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "x", "image": "x", "readinessprobe": {}}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_runs_each_service_once_in_one_namespace(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    deployments = objects(rendered, overlay, "Deployment")
    assert set(deployments) == DEPLOYMENTS[overlay]
    namespaces = {o["metadata"]["name"] for o in rendered[overlay] if o["kind"] == "Namespace"}
    assert namespaces == {"asyncstack"}
    for obj in rendered[overlay]:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "asyncstack", (
                f"{obj['kind']}/{obj['metadata']['name']}"
            )
    assert not [o for o in rendered[overlay] if o["kind"] == "Secret"], "secrets are created by the operator"


# --- deployments ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_deployment_runs_a_console_script_of_the_one_image(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    images = set()
    for name, deployment in objects(rendered, overlay, "Deployment").items():
        container = the_container(deployment)
        assert container["command"] == [name], f"{name}: command must be its console script"
        assert name in console_scripts(), f"{name} is not a console script of the workspace"
        images.add(container["image"])
    assert len(images) == 1, f"one image (./Dockerfile, target runtime) for every process: {images}"
    expected = {"local": "asyncstack:dev", "production": "registry.example.com/asyncstack/asyncstack:0.1.0"}
    assert images == {expected[overlay]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_are_on_the_contract_paths_and_ports(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    for name, deployment in objects(rendered, overlay, "Deployment").items():
        container = the_container(deployment)
        variable = HTTP_PORT_VARIABLE[name]
        assert variable in literal_env(container), f"{name}: {variable} (its contract port) is not set"
        port = int(literal_env(container)[variable])
        assert port == settings_fields(name)[variable].default, f"{name}: {variable} is not the contract port"
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
            spec = container.get(probe)
            assert spec, f"{name}: no {probe}"
            get = spec["httpGet"]
            assert get["path"] == path, f"{name}: {probe} must GET {path}"
            assert named.get(get["port"], get["port"]) == port, f"{name}: {probe} is not on :{port}"
        if "startupProbe" in container:
            assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_outlasts_the_sigterm_drain(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """The kubelet's SIGKILL must not cut the drain short: preStop + SHUTDOWN_TIMEOUT_S + asynccore's
    STOP_GRACE_S (the time resources get to close) must fit inside terminationGracePeriodSeconds."""
    default_drain = ServiceSettings.model_fields["shutdown_timeout_s"].default
    for name, deployment in objects(rendered, overlay, "Deployment").items():
        container = the_container(deployment)
        drain = float(literal_env(container).get("SHUTDOWN_TIMEOUT_S", default_drain))
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        needed = sleep + drain + STOP_GRACE_S
        assert grace > needed, f"{name}: terminationGracePeriodSeconds {grace} <= {needed} (drain)"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_resources_are_requested_and_limited(overlay: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, deployment in objects(rendered, overlay, "Deployment").items():
        resources = the_container(deployment).get("resources", {})
        for resource, parse in [("cpu", cpu_millis), ("memory", memory_bytes)]:
            request = resources.get("requests", {}).get(resource)
            limit = resources.get("limits", {}).get(resource)
            assert request and limit, f"{name}: {resource} request and limit must both be set"
            assert parse(request) <= parse(limit), f"{name}: {resource} request above its limit"


def test_resource_sizes_say_where_they_come_from() -> None:
    """Each Deployment's numbers cite their measurement (BENCHMARKS.md, or what was measured here)."""
    for path in [*(K8S / "base").glob("*.yaml"), K8S / "overlays" / "local" / "stand-ins.yaml"]:
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if line.strip() == "resources:" and line.startswith("          "):  # a container's
                comment = []
                for above in reversed(lines[:index]):
                    if not above.strip().startswith("#"):
                        break
                    comment.append(above)
                assert re.search(r"BENCHMARKS\.md|measured", " ".join(comment)), (
                    f"{path.name}:{index + 1}: resources without a comment saying where the numbers come from"
                )


# --- configuration ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_is_a_setting_and_mirrors_compose(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    for name, deployment in objects(rendered, overlay, "Deployment").items():
        env = env_of(the_container(deployment))
        fields = settings_fields(name)
        unknown = set(env) - set(fields)
        assert not unknown, f"{name}: {sorted(unknown)} are not settings of {settings_class(name).__name__}"
        required = {var for var, field in fields.items() if field.is_required()}
        assert required <= set(env), f"{name}: required settings not given: {required - set(env)}"
        compose = compose_env_by_script()[name]
        assert set(env) == compose | BEYOND_COMPOSE, (
            f"{name}: differs from docker-compose.yml: only here "
            f"{sorted(set(env) - compose - BEYOND_COMPOSE)}, only in compose {sorted(compose - set(env))}"
        )
        assert literal_env(the_container(deployment))["BIND_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_service_link_variables_shadow_a_setting(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """Service links would put ORDERS_PORT=tcp://… into every pod (a Service is named orders)."""
    for name, deployment in objects(rendered, overlay, "Deployment").items():
        assert deployment["spec"]["template"]["spec"].get("enableServiceLinks") is False, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_comes_from_a_secret_key_ref(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    documented = README.read_text()
    for name, deployment in objects(rendered, overlay, "Deployment").items():
        fields = settings_fields(name)
        for variable, entry in env_of(the_container(deployment)).items():
            assert variable in fields, f"{name}: {variable} is not a setting"
            annotation = fields[variable].annotation
            secret = annotation is SecretStr or variable in CREDENTIAL_VARIABLES
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if secret:
                assert ref and "value" not in entry, f"{name}: {variable} must come from a secretKeyRef"
                assert ref["key"] == variable, f"{name}: {variable}: name the key after the variable"
                assert not ref.get("optional"), f"{name}: {variable}: a missing secret must stop the pod"
                assert f"`{ref['name']}`" in documented, f"README.md does not tell to create {ref['name']}"
            else:
                assert "value" in entry, f"{name}: {variable}: a plain setting is a literal value"
                assert not re.search(r"://[^/@]*:[^/@]*@", str(entry["value"])), (
                    f"{name}: {variable} has a password"
                )


def secrets_the_script_creates() -> dict[str, set[str]]:
    """deploy/k8s/create-secrets: Secret name -> its keys (each ``apply NAME "KEY=…" …`` call)."""
    script = (K8S / "create-secrets").read_text()
    created: dict[str, set[str]] = {}
    for call in re.findall(r"^apply ([a-z-]+)((?: \\\n\s+\"[A-Z_]+=[^\"]*\")+)", script, re.MULTILINE):
        created[call[0]] = set(re.findall(r'"([A-Z_]+)=', call[1]))
    return created


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_create_secrets_makes_every_referenced_key(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    referenced: dict[str, set[str]] = {}
    for deployment in objects(rendered, overlay, "Deployment").values():
        for entry in env_of(the_container(deployment)).values():
            if ref := entry.get("valueFrom", {}).get("secretKeyRef"):
                referenced.setdefault(ref["name"], set()).add(ref["key"])
    created = secrets_the_script_creates()
    for name, keys in referenced.items():
        assert keys <= created.get(name, set()), (
            f"create-secrets does not make {name}: {keys - created.get(name, set())}"
        )


# --- availability ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget_and_an_autoscaler(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    budgets = objects(rendered, overlay, "PodDisruptionBudget")
    scalers = objects(rendered, overlay, "HorizontalPodAutoscaler")
    for name, deployment in objects(rendered, overlay, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets.values() if selects(b["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{name}: {len(matching)} PodDisruptionBudgets select its pods"
        budget = matching[0]["spec"]
        targeting = [
            s
            for s in scalers.values()
            if s["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        ]
        if name in STAND_INS:
            assert not targeting, f"{name}: in-memory state, one replica: no autoscaler"
            assert deployment["spec"]["replicas"] == 1
            assert budget.get("maxUnavailable") == 1, f"{name}: its budget must let a drain move it"
            continue
        assert len(targeting) == 1, f"{name}: {len(targeting)} HorizontalPodAutoscalers"
        scaler = targeting[0]["spec"]
        assert "replicas" not in deployment["spec"], f"{name}: the autoscaler owns replicas; don't set them"
        assert scaler["minReplicas"] >= 2, f"{name}: one replica has no one to take over"
        assert budget.get("minAvailable", 0) < scaler["minReplicas"], f"{name}: its budget would block drains"
        assert scaler["metrics"], f"{name}: the autoscaler has no metric"
        for metric in scaler["metrics"]:
            if metric["type"] == "Resource":
                resource = metric["resource"]["name"]
                assert the_container(deployment)["resources"]["requests"].get(resource), (
                    f"{name}: utilization of {resource} needs a {resource} request"
                )


# --- networking -----------------------------------------------------------------------------------------
def route(ingresses: dict[str, dict[str, Any]], path: str) -> tuple[str, str] | None:
    """Which (ingress, service) a request path reaches: Exact first, then the longest Prefix that
    matches whole path segments (the Ingress specification's rules)."""
    exact, prefix = [], []
    for ingress_name, ingress in ingresses.items():
        for rule in ingress["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                target = (ingress_name, p["backend"]["service"]["name"])
                if p["pathType"] == "Exact" and p["path"] == path:
                    exact.append(target)
                elif p["pathType"] == "Prefix":
                    stem = p["path"].rstrip("/")
                    if path == stem or path.startswith(stem + "/") or stem == "":
                        prefix.append((len(stem), target))
    if exact:
        assert len(set(exact)) == 1, f"{path}: exact rules disagree: {exact}"
        return exact[0]
    return max(prefix)[1] if prefix else None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingress_routes_every_contract_path(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    ingresses = objects(rendered, overlay, "Ingress")
    for path, (service, family) in contract_routes().items():
        samples = [path, f"{path.rstrip('/')}/some/thing"] if family or path == "/" else [path]
        if path == "/":
            samples += ["/article/a-slug", "/tag/python", "/feed.atom"]
        for sample in samples:
            found = route(ingresses, sample)
            assert found and found[1] == service, f"{sample} reaches {found}, the contract says {service}"
    for private in ("/healthz", "/readyz", "/metrics"):
        assert route(ingresses, private) == ("asyncstack-private", "blog"), f"{private} is public"
    # The private paths answer no one (ingress-nginx: 403 outside the allowed source range).
    allowed = ingresses["asyncstack-private"]["metadata"]["annotations"]
    assert allowed["nginx.ingress.kubernetes.io/whitelist-source-range"] == "127.0.0.1/32"
    for ingress in ingresses.values():
        assert ingress["spec"]["ingressClassName"] == "nginx"
    if overlay == "production":
        for ingress in ingresses.values():
            assert ingress["spec"]["tls"], f"{ingress['metadata']['name']}: production serves TLS"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_backends_reach_the_pods(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    services = objects(rendered, overlay, "Service")
    deployments = objects(rendered, overlay, "Deployment")
    for name, service in services.items():
        if service["spec"].get("type") == "ExternalName":
            continue
        backing = [
            d
            for d in deployments.values()
            if service_selects(service, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(backing) == 1, f"Service {name} selects {len(backing)} Deployments"
        ports = {p["name"] for c in containers(backing[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: no container port {port['targetPort']}"
    for ingress in objects(rendered, overlay, "Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                backend = p["backend"]["service"]
                assert backend["name"] in services, f"the ingress names Service {backend['name']}"
                assert backend["port"]["name"] in {
                    x["name"] for x in services[backend["name"]]["spec"]["ports"]
                }


# --- data services --------------------------------------------------------------------------------------
def kafka_bootstrap(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> set[str]:
    return {
        literal_env(the_container(d))["KAFKA_BOOTSTRAP"]
        for d in objects(rendered, overlay, "Deployment").values()
        if "KAFKA_BOOTSTRAP" in literal_env(the_container(d))
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_data_services_are_referenced_not_run(
    overlay: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    services = objects(rendered, overlay, "Service")
    for name in DATA_SERVICES:
        assert services[name]["spec"]["type"] == "ExternalName", f"{name}: reference the engine, don't run it"
    assert not objects(rendered, overlay, "StatefulSet"), "no data engine is re-implemented here"
    (bootstrap,) = kafka_bootstrap(rendered, overlay)
    host, _, port = bootstrap.partition(":")
    assert port == "9092"
    if overlay == "local":
        assert services[host]["spec"]["type"] == "ExternalName"


def test_production_kafka_is_a_strimzi_cluster_with_the_services_topics(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    (cluster,) = objects(rendered, "production", "Kafka").values()
    name = cluster["metadata"]["name"]
    (bootstrap,) = kafka_bootstrap(rendered, "production")
    assert bootstrap == f"{name}-kafka-bootstrap:9092", (
        "KAFKA_BOOTSTRAP must name Strimzi's bootstrap Service"
    )
    assert {(x["port"], x["tls"]) for x in cluster["spec"]["kafka"]["listeners"]} >= {(9092, False)}
    pinned = ET.parse(KAFKA_POM).getroot().find("{*}properties/{*}kafka.version")
    assert pinned is not None and cluster["spec"]["kafka"]["version"] == pinned.text, (
        "the release the tests run"
    )
    assert cluster["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    pools = objects(rendered, "production", "KafkaNodePool").values()
    for pool in pools:
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == name
    roles = {role for pool in pools for role in pool["spec"]["roles"]}
    assert roles == {"controller", "broker"}, "KRaft: the pools hold the controllers as well as the brokers"
    topics = {t["spec"]["topicName"]: t for t in objects(rendered, "production", "KafkaTopic").values()}
    stream = settings_fields("stream")
    expected = {
        stream["STREAM_TOPIC"].default: stream["STREAM_PARTITIONS"].default,
        stream["STREAM_DLQ_TOPIC"].default: stream["STREAM_DLQ_PARTITIONS"].default,
        stream["STREAM_ALERTS_TOPIC"].default: stream["STREAM_ALERTS_PARTITIONS"].default,
    }
    assert {t: spec["spec"]["partitions"] for t, spec in topics.items()} == expected
    assert settings_fields("orders")["KAFKA_TOPIC_PARTITIONS"].default == expected["events"]
    for topic in topics.values():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == name


# --- metrics --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_scraped(overlay: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, deployment in objects(rendered, overlay, "Deployment").items():
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        port = literal_env(the_container(deployment)).get(HTTP_PORT_VARIABLE[name])
        assert annotations.get("prometheus.io/scrape") == "true", f"{name}: not scraped"
        assert annotations.get("prometheus.io/port") == port, f"{name}: scraped on the wrong port"
        assert annotations.get("prometheus.io/path") == "/metrics"
    if overlay == "production":
        (monitor,) = objects(rendered, overlay, "ServiceMonitor").values()
        services = objects(rendered, overlay, "Service")
        watched = {
            n
            for n, s in services.items()
            if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
        }
        assert watched == SERVICES, f"the ServiceMonitor selects {watched}"
        assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"http"}
        assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics"}


def test_the_readme_tells_how_to_render_and_apply_each_overlay() -> None:
    text = README.read_text()
    for overlay in OVERLAYS:
        assert f"overlays/{overlay}" in text
    assert KUSTOMIZE_VERSION in text
