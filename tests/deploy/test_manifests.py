"""docker-compose.yml, deploy/k8s, deploy/prometheus and deploy/grafana against the code.

No network and no Docker/Kubernetes: the files are parsed and checked for what the code
expects (services, ports, settings, probes, metric names). promtool, when installed, also
checks the alert rules and the Prometheus configuration.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from libs.common.settings import DEFAULT_PORTS, CommonSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"

SERVICES = ("gateway", *DEFAULT_PORTS)  # the topology ARCHITECTURE.md names
HTTP_PORT = 8080
METRICS_PORT = 9100
NAMESPACE = "heddle"
INFRA = ("postgres", "redis", "rabbitmq")

# What each service cannot run without in production (the defaults are the embedded mode).
URLS = ("HEDDLE_DATABASE_URL", "HEDDLE_BROKER_URL", "HEDDLE_REDIS_URL")
ADDRESSES = {
    "HEDDLE_WORKFLOW_ADDRESS": "workflow",
    "HEDDLE_NODE_ADDRESSES": "node",
    "HEDDLE_AI_ADDRESS": "ai",
    "HEDDLE_TOOL_ADDRESS": "tool",
    "HEDDLE_SCHEDULER_ADDRESS": "scheduler",
    "HEDDLE_LOG_ADDRESS": "log",
}
REQUIRED: dict[str, set[str]] = {
    "gateway": {"HEDDLE_HTTP_HOST", *ADDRESSES},
    "workflow": {*URLS, "HEDDLE_BIND_HOST", "HEDDLE_NODE_ADDRESSES"},
    "node": {
        "HEDDLE_BIND_HOST",
        "HEDDLE_AI_ADDRESS",
        "HEDDLE_TOOL_ADDRESS",
        "HEDDLE_WORKFLOW_ADDRESS",
    },
    "ai": {"HEDDLE_BIND_HOST"},
    "tool": {"HEDDLE_BIND_HOST"},
    "scheduler": {*URLS, "HEDDLE_BIND_HOST"},
    "log": {*URLS, "HEDDLE_BIND_HOST"},
}
URL_SCHEMES = {
    "HEDDLE_DATABASE_URL": "postgresql+asyncpg://",
    "HEDDLE_BROKER_URL": "amqp://",
    "HEDDLE_REDIS_URL": "redis://",
}


# ------------------------------------------------------------------------------ loading


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def heddle_compose_services() -> dict[str, dict[str, Any]]:
    """Compose services that run `python -m services.<name>`, by that name."""
    found = {}
    for service in compose()["services"].values():
        command = service.get("command") or []
        if command[:2] == ["python", "-m"] and command[2].startswith("services."):
            found[command[2].removeprefix("services.")] = service
    return found


@cache
def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append((path.name, document))
    return documents


def k8s(kind: str, name: str) -> dict[str, Any]:
    for _, document in k8s_documents():
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise AssertionError(f"deploy/k8s has no {kind} {name}")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def services_with_main() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "services").glob("*/__main__.py"))


# ------------------------------------------------------------------------------ settings


def settings_class(service: str) -> type[CommonSettings]:
    """The settings class of services/<service>/settings.py (CommonSettings without one)."""
    if not (ROOT / "services" / service / "settings.py").exists():
        return CommonSettings
    module = importlib.import_module(f"services.{service}.settings")
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, CommonSettings)
        and value.__module__ == module.__name__
    ]
    leaves = [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]
    assert len(leaves) == 1, f"services/{service}/settings.py: which settings class? {leaves}"
    return leaves[0]


def env_names(cls: type[CommonSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper() for name in cls.model_fields}


def all_setting_names() -> set[str]:
    names = env_names(CommonSettings)
    for service in SERVICES:
        names |= env_names(settings_class(service))
    return names


def check_env(service: str, env: dict[str, str], where: str, monkeypatch: Any) -> None:
    """Every HEDDLE_* variable is an option of the service, and the settings accept them."""
    cls = settings_class(service)
    heddle = {k: str(v) for k, v in env.items() if k.startswith("HEDDLE_")}
    unknown = sorted(set(heddle) - env_names(cls))
    assert not unknown, f"{where}: {service} ({cls.__name__}) has no setting for {unknown}"
    missing = sorted(REQUIRED[service] - set(heddle))
    assert not missing, f"{where}: {service} needs {missing} in production"
    for variable, scheme in URL_SCHEMES.items():
        if variable in REQUIRED[service]:
            assert heddle[variable].startswith(scheme), f"{where}: {service} {variable}"
    with monkeypatch.context() as patch:
        for variable in [k for k in os.environ if k.startswith("HEDDLE_")]:
            patch.delenv(variable)
        for variable, value in heddle.items():
            patch.setenv(variable, value)
        settings = cls()  # validates every value the way the service will at start-up
    if service != "gateway":
        assert settings.port_for(service) == DEFAULT_PORTS[service], f"{where}: {service}"


def split_address(address: str) -> tuple[str, int]:
    target = address.removeprefix("dns:///")
    host, _, port = target.rpartition(":")
    return host, int(port)


# ------------------------------------------------------------------------------ compose


def test_every_service_has_a_compose_service() -> None:
    heddle = heddle_compose_services()
    for service in {*SERVICES, *services_with_main()}:
        assert service in heddle, f"docker-compose.yml does not run services.{service}"
        assert service in compose()["services"], f"compose service should be named {service}"
    for service in heddle:
        assert (ROOT / "services" / service / "__init__.py").exists(), service


def test_compose_infrastructure_has_healthchecks() -> None:
    expected = {
        "postgres": "pg_isready",
        "redis": "redis-cli",
        "rabbitmq": "rabbitmq-diagnostics",
    }
    for name, tool in expected.items():
        test = compose_service(name)["healthcheck"]["test"]
        assert tool in " ".join(test), name
    assert compose_service("postgres")["image"].startswith("postgres:16")
    assert compose_service("rabbitmq")["image"].startswith("rabbitmq:3-management")
    for name in ("jaeger", "prometheus", "grafana"):
        assert name in compose()["services"]


def test_compose_ports_and_healthchecks_match_the_code() -> None:
    for service, spec in heddle_compose_services().items():
        env = spec["environment"]
        test = spec["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "libs.cli.healthcheck"], service
        if service == "gateway":
            assert env["HEDDLE_HTTP_PORT"] == str(HTTP_PORT)
            assert test[4:] == ["--http", str(HTTP_PORT)]
            assert f"{HTTP_PORT}:{HTTP_PORT}" in spec["ports"]
            continue
        port = DEFAULT_PORTS[service]
        assert env["HEDDLE_GRPC_PORT"] == str(port), service
        assert test[4:] == [str(port)], service
        assert str(port) in spec["expose"], service
        assert env["HEDDLE_METRICS_PORT"] == str(METRICS_PORT), service
        assert str(METRICS_PORT) in spec["expose"], service
        if service == "workflow":  # the worker endpoint, for SDK workers outside compose
            worker_port = int(env["HEDDLE_WORKER_PORT"])
            assert worker_port == port + 100  # the setting's default
            assert spec["ports"] == [f"{worker_port}-{worker_port + 1}:{worker_port}"]
            continue
        assert "ports" not in spec, f"{service}: only the gateway and workers' port are published"
    assert (ROOT / "libs" / "cli" / "healthcheck.py").exists()


def test_compose_environment_is_made_of_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    anchor = compose()["x-heddle-env"]
    for service, spec in heddle_compose_services().items():
        env = spec["environment"]
        assert anchor.items() <= env.items(), f"{service} does not use x-heddle-env"
        check_env(service, env, "docker-compose.yml", monkeypatch)


def test_compose_addresses_name_compose_services() -> None:
    services = compose()["services"]
    anchor = compose()["x-heddle-env"]
    for variable, target in ADDRESSES.items():
        host, port = split_address(anchor[variable])
        assert host == target and host in services, variable
        assert port == DEFAULT_PORTS[target], variable
    for variable, name in zip(URLS, ("postgres", "rabbitmq", "redis"), strict=True):
        assert f"@{name}:" in anchor[variable] or f"//{name}:" in anchor[variable], variable


def test_compose_replicas_and_dependencies() -> None:
    services = compose()["services"]
    assert services["workflow"]["deploy"]["replicas"] >= 2
    assert services["node"]["deploy"]["replicas"] == 3
    assert compose()["x-heddle-env"]["HEDDLE_NODE_ADDRESSES"] == "dns:///node:50052"
    for name, spec in services.items():
        depends = spec.get("depends_on") or {}
        for dependency in depends:
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if isinstance(depends, dict) and depends[dependency].get("condition") == (
                "service_healthy"
            ):
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
    for name in ("workflow", "scheduler", "log"):
        depends = services[name]["depends_on"]
        for infra in INFRA:
            assert depends[infra]["condition"] == "service_healthy", f"{name} -> {infra}"


def test_compose_mounts_the_observability_config() -> None:
    volumes = " ".join(compose_service("prometheus")["volumes"])
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml" in volumes
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml" in volumes
    volumes = " ".join(compose_service("grafana")["volumes"])
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning" in volumes
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards" in volumes


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install \.", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0")), "the image runs as non-root"
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}
    assert {HTTP_PORT, METRICS_PORT, *DEFAULT_PORTS.values()} <= exposed
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_the_installed_package_carries_its_data_files(tmp_path: Path) -> None:
    """The image installs a wheel (not the tree): the built console the gateway serves and
    the migration template must be inside it. Built from a copy of what the Dockerfile
    copies, so that no build/ or egg-info left in the tree can fill the gaps."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", ".mypy_cache")
    for name in ("libs", "services"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    console = ROOT / "services" / "gateway" / "console_dist"
    expected = {str(p.relative_to(ROOT)) for p in console.rglob("*") if p.is_file()}
    assert expected and expected <= names, sorted(expected - names)
    assert "libs/migrations/script.py.mako" in names


# ------------------------------------------------------------------------------ kubernetes


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    present = sorted(p.name for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present
    assert len(set(listed)) == len(listed)
    assert kustomization["namespace"] == NAMESPACE
    images = {image["name"] for image in kustomization["images"]}
    for _, document in k8s_documents():
        if document["kind"] == "Deployment":
            assert container(document)["image"].split(":")[0] in images


def test_k8s_documents_are_well_formed() -> None:
    for path, document in k8s_documents():
        assert {"apiVersion", "kind", "metadata"} <= document.keys(), path
        if document["kind"] != "Namespace":
            assert document["metadata"].get("namespace") == NAMESPACE, path
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in k8s_documents()}
    assert len(kinds) == len(k8s_documents()), "duplicate kind/name"
    assert ("Namespace", NAMESPACE) in kinds


def test_every_service_has_a_deployment_and_a_service() -> None:
    for service in {*SERVICES, *services_with_main()}:
        deployment = k8s("Deployment", service)
        svc = k8s("Service", service)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items(), service
        assert svc["spec"]["selector"].items() <= pod_labels.items(), service
        assert container(deployment)["command"] == ["python", "-m", f"services.{service}"]


def test_k8s_ports_and_probes_match_the_code() -> None:
    for service in SERVICES:
        deployment = k8s("Deployment", service)
        spec = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
        service_ports = {p["name"]: p for p in k8s("Service", service)["spec"]["ports"]}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", service
        assert annotations["prometheus.io/path"] == "/metrics", service
        if service == "gateway":
            assert ports["http"] == HTTP_PORT
            assert service_ports["http"]["targetPort"] == HTTP_PORT
            assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": HTTP_PORT}
            assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": HTTP_PORT}
            assert annotations["prometheus.io/port"] == str(HTTP_PORT)
            continue
        port = DEFAULT_PORTS[service]
        assert ports["grpc"] == port, service
        assert ports["metrics"] == METRICS_PORT, service
        assert service_ports["grpc"]["port"] == service_ports["grpc"]["targetPort"] == port
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert spec[probe]["grpc"]["port"] == port, f"{service} {probe}"
        assert annotations["prometheus.io/port"] == str(METRICS_PORT), service
        env = {e["name"]: e.get("value") for e in spec["env"]}
        assert env["HEDDLE_GRPC_PORT"] == str(port), service
        assert env["HEDDLE_METRICS_PORT"] == str(METRICS_PORT), service


def test_k8s_pods_are_hardened_and_sized() -> None:
    for service in SERVICES:
        deployment = k8s("Deployment", service)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, service
        assert pod["securityContext"]["runAsUser"] != 0, service
        spec = container(deployment)
        assert spec["securityContext"]["allowPrivilegeEscalation"] is False, service
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= spec["resources"][kind].keys(), f"{service} {kind}"


def configmap_env() -> dict[str, str]:
    return dict(k8s("ConfigMap", "heddle-config")["data"])


def secret_env() -> dict[str, str]:
    return dict(k8s("Secret", "heddle-secrets")["stringData"])


def test_k8s_environment_is_made_of_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    known = all_setting_names()
    shared = {**configmap_env(), **secret_env()}
    unknown = sorted(k for k in shared if k.startswith("HEDDLE_") and k not in known)
    assert not unknown, f"configmap/secret set variables no settings class has: {unknown}"
    for secret in ("HEDDLE_DATABASE_URL", "HEDDLE_BROKER_URL", "HEDDLE_SERVICE_TOKEN"):
        assert secret in secret_env() and secret not in configmap_env(), secret
    for service in SERVICES:
        spec = container(k8s("Deployment", service))
        refs = {next(iter(ref.values()))["name"] for ref in spec["envFrom"]}
        assert refs == {"heddle-config", "heddle-secrets"}, service
        own = {e["name"]: e.get("value", "from-field") for e in spec["env"]}
        options = env_names(settings_class(service))
        unknown = sorted(k for k in own if k.startswith("HEDDLE_") and k not in options)
        assert not unknown, f"k8s {service} sets variables it has no setting for: {unknown}"
        check_env(service, {**shared, **own}, "deploy/k8s", monkeypatch)


def test_k8s_addresses_name_k8s_services() -> None:
    env = {**configmap_env(), **secret_env()}
    suffix = f".{NAMESPACE}.svc.cluster.local"
    for variable, target in ADDRESSES.items():
        host, port = split_address(env[variable])
        assert host == f"{target}{suffix}", variable
        assert port == DEFAULT_PORTS[target], variable
        service = k8s("Service", target)
        if env[variable].startswith("dns:///"):
            # Round-robin needs every pod's address: a headless Service.
            assert service["spec"].get("clusterIP") == "None", target
    assert env["HEDDLE_NODE_ADDRESSES"] == f"dns:///node{suffix}:50052"
    for variable, name in zip(URLS, ("postgres", "rabbitmq", "redis"), strict=True):
        assert re.search(rf"[@/]{name}{re.escape(suffix)}:\d+/", env[variable]), variable
        k8s("Service", name)
        k8s("StatefulSet", name)


def test_k8s_workflow_and_node_replicas() -> None:
    workflow = k8s("Deployment", "workflow")
    assert workflow["spec"]["replicas"] == 2
    env = {e["name"]: e for e in container(workflow)["env"]}
    assert env["HEDDLE_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert k8s("Service", "node")["spec"]["clusterIP"] == "None"
    hpa = k8s("HorizontalPodAutoscaler", "node")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "node",
    }
    assert hpa["spec"]["minReplicas"] >= 3
    assert any(m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    node = k8s("Deployment", "node")
    assert "cpu" in container(node)["resources"]["requests"], "CPU utilization needs a request"
    assert "replicas" not in node["spec"], "the HPA owns the node replica count"


# ------------------------------------------------------------------------------ metrics

_METRIC_CALL = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")


@cache
def exported_metrics() -> dict[str, str]:
    """Every series name the code can export -> its type (counter-like or gauge)."""
    names: dict[str, str] = {}
    for path in [*ROOT.glob("libs/**/*.py"), *ROOT.glob("services/**/*.py")]:
        if "gen" in path.relative_to(ROOT).parts:
            continue
        for kind, name in _METRIC_CALL.findall(path.read_text()):
            if kind == "Counter":
                base = name.removesuffix("_total")
                names[f"{base}_total"] = "counter"
                names[f"{base}_created"] = "gauge"
            elif kind in ("Histogram", "Summary"):
                for suffix in ("_bucket", "_sum", "_count"):
                    names[f"{name}{suffix}"] = "counter"
                names[f"{name}_created"] = "gauge"
                if kind == "Summary":
                    names[name] = "gauge"
            else:
                names[name] = "gauge"
    # prometheus_client's default process/platform collectors, and Prometheus' own `up`.
    for family in REGISTRY.collect():
        for sample in family.samples:
            kind = "counter" if family.type in ("counter", "histogram") else "gauge"
            names.setdefault(sample.name, kind)
    names["up"] = "gauge"
    return names


_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
_KEYWORDS |= {"group_left", "group_right", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords removed)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', " ", expr)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][-+]?\d+)?(ms|[smhdwy])?\b", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def check_promql(expr: str, where: str) -> None:
    exported = exported_metrics()
    names = promql_metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    unknown = sorted(names - exported.keys())
    assert not unknown, f"{where}: {unknown} are not exported by the code ({expr!r})"
    for function, name in re.findall(r"\b(rate|irate|increase)\(\s*([a-zA-Z_:][\w:]*)", expr):
        assert exported[name] == "counter", f"{where}: {function}() of gauge {name}"
    assert expr.count("(") == expr.count(")"), f"{where}: unbalanced parentheses"


def test_promql_metric_names_extractor() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, node_type) (rate(heddle_x_bucket{a="b",c=~"d"}'
        "[$__rate_interval]))) / ignoring(job) sum without (instance) (up offset 5m) > 1e-3"
    )
    assert promql_metric_names(expr) == {"heddle_x_bucket", "up"}
    assert promql_metric_names("sum(rate(process_cpu_seconds_total[5m])) * 60") == {
        "process_cpu_seconds_total"
    }


def test_exported_metrics_include_the_documented_ones() -> None:
    exported = exported_metrics()
    for name in (
        "heddle_executions_total",
        "heddle_dispatch_latency_seconds_bucket",
        "heddle_outbox_backlog",
        "heddle_bus_queue_depth",
        "heddle_grpc_server_handled_total",
    ):
        assert name in exported, name


# ------------------------------------------------------------------------------ prometheus


@cache
def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    assert isinstance(document["groups"], list) and document["groups"]
    rules = []
    for group in document["groups"]:
        assert group["name"] and isinstance(group["rules"], list) and group["rules"]
        rules.extend(group["rules"])
    return rules


def test_alert_rules_are_well_formed() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(set(names)) == len(names), "duplicate alert names"
    for rule in alert_rules():
        where = f"alerts.yml {rule['alert']}"
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, where
        assert re.fullmatch(r"(\d+[smhdwy])+", rule["for"]), where
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, where
        assert {"summary", "description"} <= rule["annotations"].keys(), where
        check_promql(rule["expr"], where)


def test_alert_rules_cover_the_failure_modes() -> None:
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    assert re.search(r"\bup\{[^}]*\}\s*==\s*0", exprs), "a service down"
    assert 'heddle_executions_total{status="failed"}' in exprs, "execution error rate"
    assert re.search(
        r"histogram_quantile\(0\.99,[^;]*heddle_dispatch_latency_seconds_bucket", exprs
    )
    assert "heddle_outbox_backlog" in exprs
    assert "heddle_bus_queue_depth" in exprs


def test_prometheus_scrapes_every_service() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service in SERVICES:
        job = jobs[f"heddle-{service}"]
        targets = [t for s in job.get("static_configs", []) for t in s["targets"]]
        targets += [f"{n}:{s['port']}" for s in job.get("dns_sd_configs", []) for n in s["names"]]
        port = HTTP_PORT if service == "gateway" else METRICS_PORT
        assert targets == [f"{service}:{port}"], service
    for service in ("workflow", "node"):  # several replicas: one target each
        assert "dns_sd_configs" in jobs[f"heddle-{service}"], service


def test_promtool_accepts_rules_and_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:  # not installed: the structural checks above still ran
        return
    rules = subprocess.run(
        [promtool, "check", "rules", str(PROMETHEUS / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    config = (PROMETHEUS / "prometheus.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/", ""))
    checked = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# ------------------------------------------------------------------------------ grafana


def dashboards() -> list[tuple[str, dict[str, Any]]]:
    paths = sorted((GRAFANA / "dashboards").glob("*.json"))
    assert len(paths) >= 4
    return [(p.name, json.loads(p.read_text())) for p in paths]


def test_grafana_provisioning() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "heddle.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboards_query_only_exported_metrics() -> None:
    uids = [d["uid"] for _, d in dashboards()]
    assert len(set(uids)) == len(uids)
    titles = {d["title"] for _, d in dashboards()}
    for topic in ("Executions", "Nodes", "Broker", "Services"):
        assert any(topic in title for title in titles), topic
    for name, dashboard in dashboards():
        panels = dashboard["panels"]
        assert panels, name
        ids = [panel["id"] for panel in panels]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
        for panel in panels:
            where = f"{name} / {panel['title']}"
            assert panel["datasource"]["uid"] == "prometheus", where
            assert {"x", "y", "w", "h"} <= panel["gridPos"].keys(), where
            assert panel["targets"], where
            for target in panel["targets"]:
                check_promql(target["expr"], where)
