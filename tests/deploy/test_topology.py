"""The spec builder of `heddle up` and the e2e fixtures: env and ports per process."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from libs.cli import topology
from libs.cli.topology import (
    LOCAL_DATABASE_URL,
    TopologyPorts,
    add_arguments,
    default_topology,
    free_port,
    tail,
)
from libs.common.settings import DEFAULT_PORTS, CommonSettings
from services.workflow.settings import WorkflowSettings

ROOT = Path(__file__).resolve().parents[2]


def test_default_topology_runs_the_production_shape() -> None:
    specs = default_topology()
    assert [s.name for s in specs] == [
        "ai",
        "tool",
        "log",
        "node-1",
        "node-2",
        "node-3",
        "workflow-1",
        "workflow-2",
        "scheduler",
        "gateway",
    ]
    ports = {s.name: s.grpc_port for s in specs}
    assert ports["workflow-1"] == DEFAULT_PORTS["workflow"] == 50051
    assert ports["workflow-2"] == 50061
    assert [ports[f"node-{i}"] for i in (1, 2, 3)] == [50052, 50062, 50072]
    for service in ("ai", "tool", "scheduler", "log"):
        assert ports[service] == DEFAULT_PORTS[service]
    gateway = specs[-1]
    assert gateway.grpc_port is None and gateway.http_port == 8080
    assert gateway.endpoint == "http://127.0.0.1:8080"
    metrics = [s.metrics_port for s in specs[:-1]]
    assert metrics == list(range(9101, 9110))
    for spec in specs:
        assert spec.command[1:] == ["-m", f"services.{spec.service}"]


def test_every_process_gets_its_environment() -> None:
    specs = {s.name: s for s in default_topology()}
    for spec in specs.values():
        env = spec.env
        assert env["HEDDLE_DATABASE_URL"] == LOCAL_DATABASE_URL
        assert env["HEDDLE_BROKER_URL"] == "amqp://guest:guest@127.0.0.1:5672/"
        assert env["HEDDLE_REDIS_URL"] == "redis://127.0.0.1:6379/0"
        nodes = "127.0.0.1:50052,127.0.0.1:50062,127.0.0.1:50072"
        assert env["HEDDLE_NODE_ADDRESSES"] == nodes
        assert env["HEDDLE_WORKFLOW_ADDRESS"] == "ipv4:127.0.0.1:50051,127.0.0.1:50061"
        assert env["HEDDLE_AI_ADDRESS"] == "127.0.0.1:50053"
        assert env["OTEL_SERVICE_NAME"] == f"heddle-{spec.name}"
        if spec.grpc_port is not None:
            assert env["HEDDLE_GRPC_PORT"] == str(spec.grpc_port)
            assert env["HEDDLE_METRICS_PORT"] == str(spec.metrics_port)
        assert "HEDDLE_SERVICE_TOKEN" not in env
    assert specs["workflow-1"].env["HEDDLE_REPLICA_ID"] == "workflow-1"
    assert specs["workflow-2"].env["HEDDLE_REPLICA_ID"] == "workflow-2"
    assert "HEDDLE_REPLICA_ID" not in specs["node-1"].env
    assert specs["gateway"].env["HEDDLE_HTTP_PORT"] == "8080"
    assert specs["gateway"].env["HEDDLE_HTTP_HOST"] == "127.0.0.1"


def test_the_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = next(s for s in default_topology() if s.name == "workflow-2")
    for name, value in spec.env.items():
        monkeypatch.setenv(name, value)
    settings = WorkflowSettings()
    assert settings.replica_id == "workflow-2"
    assert settings.port_for("workflow") == 50061
    assert len(settings.node_addresses) == 3
    assert CommonSettings().metrics_port == spec.metrics_port


def test_ports_urls_and_token_are_parameters() -> None:
    ports = TopologyPorts.free(workflow_replicas=3, node_replicas=2)
    specs = default_topology(
        ports=ports,
        database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/heddle_e2e",
        broker_url="amqp://guest:guest@127.0.0.1:5672/e2e",
        service_token="secret",
        extra_env={"HEDDLE_LOG_FORMAT": "console"},
    )
    names = [s.name for s in specs]
    assert names.count("gateway") == 1
    assert [n for n in names if n.startswith("workflow")] == [
        "workflow-1",
        "workflow-2",
        "workflow-3",
    ]
    assert [n for n in names if n.startswith("node")] == ["node-1", "node-2"]
    used = [s.grpc_port for s in specs if s.grpc_port] + [ports.http]
    assert len(set(used)) == len(used)
    for spec in specs:
        assert spec.env["HEDDLE_DATABASE_URL"].endswith("/heddle_e2e")
        assert spec.env["HEDDLE_BROKER_URL"].endswith("/e2e")
        assert spec.env["HEDDLE_SERVICE_TOKEN"] == "secret"
        assert spec.env["HEDDLE_LOG_FORMAT"] == "console"
        assert spec.metrics_port is None or spec.name == "gateway"
        assert "HEDDLE_METRICS_PORT" not in spec.env
    workflow = ",".join(f"127.0.0.1:{p}" for p in ports.workflow)
    assert specs[0].env["HEDDLE_WORKFLOW_ADDRESS"] == f"ipv4:{workflow}"


def test_a_single_replica_or_a_hostname_gets_a_plain_address() -> None:
    ports = TopologyPorts(workflow=(7000,), metrics=None)
    assert default_topology(ports=ports)[0].env["HEDDLE_WORKFLOW_ADDRESS"] == "127.0.0.1:7000"
    specs = default_topology(host="localhost")
    assert specs[0].env["HEDDLE_WORKFLOW_ADDRESS"] == "localhost:50051"


def test_bad_port_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="metrics ports"):
        default_topology(ports=TopologyPorts(metrics=(9101, 9102)))
    with pytest.raises(ValueError, match="at least one"):
        default_topology(ports=TopologyPorts(node=()))


def test_cli_arguments_and_log_tail(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--var-dir", str(tmp_path), "--timeout", "5"])
    assert args.timeout == 5.0 and args.database_url == LOCAL_DATABASE_URL
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 3) == "line 97\nline 98\nline 99"
    assert tail(tmp_path / "missing.log") == ""


def test_a_port_another_process_just_claimed_is_not_picked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes picking at once (pytest's workers, a benchmark beside the suite) do not
    get the same port: a pick is claimed machine-wide until its process has had the time to
    bind it; a claim older than that is taken over."""
    first, second = free_port(), free_port()
    claim = f"from libs.cli import topology; print(topology._claim({first}), end='')"
    other = subprocess.run(
        [sys.executable, "-c", claim], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert other.stdout == "False"  # this process claimed it when it picked it
    path = topology._CLAIMS / str(first)
    path.unlink()
    other = subprocess.run(
        [sys.executable, "-c", claim], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert other.stdout == "True"
    (topology._CLAIMS / str(second)).unlink()  # this process's own pick, given back
    topology._handed_out.difference_update({first, second})
    picks = iter([first, second])
    monkeypatch.setattr(topology.random, "randint", lambda low, high: next(picks))
    assert free_port() == second  # the other process's claim on `first` holds
    os.utime(path, (0, 0))  # the claim has aged past the time a bind takes
    topology._handed_out.discard(first)
    picks = iter([first])
    assert free_port() == first


def test_free_ports_are_bindable_and_outside_the_ephemeral_range() -> None:
    """free_port picks below the kernel's ephemeral range, which outgoing connections take
    from (a port bound to 0 came from there and could be handed to one before the process
    that was given it binds), never a port in use, never one it gave before."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    held = socket.socket()
    held.bind(("127.0.0.1", free_port()))
    try:
        ports = {free_port() for _ in range(50)}
        assert all(1024 <= port < low for port in ports), sorted(ports)
        assert held.getsockname()[1] not in ports
        assert len(ports) == 50  # never one this process was given before
    finally:
        held.close()
