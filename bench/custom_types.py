"""Custom node types against built-in ones: a chain of 100 and a fan-out/fan-in of 1000 of
`bench.noop` (served by one SDK worker process) against the same workflows of the built-in
`noop` (node replicas), in one run, with the CPU calibration.

    python bench/custom_types.py [--topology embedded|production|both] [--runs 5]

Starts node replicas, a workflow service and one worker (`python -m heddle_sdk worker
bench/custom_nodes.py`) as separate processes; times each execution from StartExecution to
the end of WaitExecution, as bench/engine.py does. Prints each median, the ratio custom /
built-in (issue #14's bound: at most 1.3) and the CPU per run of each process group.

Topologies: `embedded` is the embedded stack's storage (SQLite, the in-process event bus);
`production` is the production topology's (PostgreSQL, events relayed to RabbitMQ with
confirms, Redis for cache and locks), as bench/engine.py's --production.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
from heddle.v1 import workflow_pb2, workflow_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import engine as engine_bench  # noqa: E402  (bench/engine.py: processes, timing, calibration)

from libs.cli.stack import free_port  # noqa: E402
from libs.common import jsonutil  # noqa: E402

BOUND = 1.3


def with_type(definition: dict[str, Any], node_type: str) -> dict[str, Any]:
    nodes = [
        {**node, "type": node_type} if node["type"] == "noop" else node
        for node in definition["nodes"]
    ]
    return {**definition, "name": f"{definition['name']}-{node_type}", "nodes": nodes}


def _spawn_worker(port: int, slots: int, log_dir: str) -> subprocess.Popen[bytes]:
    with Path(log_dir, "worker.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "heddle_sdk",
                "worker",
                str(ROOT / "bench" / "custom_nodes.py"),
                "--server",
                f"127.0.0.1:{port}",
                "--max-concurrency",
                str(slots),
                "--log-level",
                "warning",
                "--name",
                "bench",
                # Auth is off in this bench (the default tenant): any key is taken.
                "--api-key",
                "hk_000000000000_" + "bench" * 6,
            ],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def _worker_ready(stub: workflow_pb2_grpc.WorkflowServiceStub, limit_s: float) -> None:
    from heddle.v1 import node_pb2

    deadline = asyncio.get_running_loop().time() + limit_s
    while True:
        reply = await stub.ListNodeTypes(node_pb2.ListNodeTypesRequest(), timeout=10)
        types = jsonutil.loads(reply.node_types_json) or []
        if any(t["type"] == "bench.noop" and t.get("connected") for t in types):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise SystemExit("the bench worker did not connect")
        await asyncio.sleep(0.2)


async def measure(topology: str, args: argparse.Namespace) -> list[float]:
    """One topology's run: the printed figures; the ratios (chain, fan-out)."""
    database = "sqlite" if topology == "embedded" else "postgres"
    with tempfile.TemporaryDirectory() as tmp:
        database_url, pg_name = await engine_bench._database(database, tmp)
        ports = {name: free_port() for name in ("workflow", "worker", "ai", "tool")}
        node_ports = [free_port() for _ in range(args.node_replicas)]
        common = {
            "HEDDLE_DATABASE_URL": database_url,
            "HEDDLE_LOG_LEVEL": "WARNING",
            "HEDDLE_WORKFLOW_ADDRESS": f"127.0.0.1:{ports['workflow']}",
            "HEDDLE_AI_ADDRESS": f"127.0.0.1:{ports['ai']}",
            "HEDDLE_TOOL_ADDRESS": f"127.0.0.1:{ports['tool']}",
            "HEDDLE_NODE_ADDRESSES": ",".join(f"127.0.0.1:{p}" for p in node_ports),
            "HEDDLE_WORKER_PORT": str(ports["worker"]),
            "HEDDLE_AUTH_ENABLED": "false",  # the worker serves the default tenant
        }
        if topology == "production":
            common["HEDDLE_BROKER_URL"] = "amqp://guest:guest@127.0.0.1:5672/"
            common["HEDDLE_REDIS_URL"] = "redis://127.0.0.1:6379/0"
        processes = [
            engine_bench._spawn("node", {**common, "HEDDLE_GRPC_PORT": str(port)}, tmp)
            for port in node_ports
        ]
        workflow = engine_bench._spawn(
            "workflow", {**common, "HEDDLE_GRPC_PORT": str(ports["workflow"])}, tmp
        )
        processes.append(workflow)
        worker = _spawn_worker(ports["worker"], max(args.fan_out, 16), tmp)
        processes.append(worker)
        ratios = []
        try:
            # A loaded machine starts services slowly: give them two minutes.
            await engine_bench._wait_healthy(
                [f"127.0.0.1:{p}" for p in node_ports] + [f"127.0.0.1:{ports['workflow']}"],
                limit_s=120.0,
            )
            channel = engine_bench.create_channel(f"127.0.0.1:{ports['workflow']}")
            stub = workflow_pb2_grpc.WorkflowServiceStub(channel)
            await _worker_ready(stub, 60)
            storage = (
                "SQLite, in-process bus"
                if topology == "embedded"
                else "PostgreSQL, RabbitMQ + Redis"
            )
            print(
                f"custom-type benchmark, {topology} ({storage}): grpcio {grpc.__version__}, "
                f"{args.node_replicas} node replica(s), 1 SDK worker, {args.runs} runs each "
                "(after 1 warm-up)",
                flush=True,
            )
            print(
                f"machine speed: calibration loop {engine_bench.calibration_ms():.0f} ms "
                "(~175 ms is this VM at full speed)",
                flush=True,
            )
            cpu = {
                "workflow": [workflow.pid],
                "node replicas": [p.pid for p in processes[: len(node_ports)]],
                "worker": [worker.pid],
            }
            for label, shape in (
                (f"chain of {args.chain}", engine_bench.chain(args.chain)),
                (f"fan-out/fan-in {args.fan_out}", engine_bench.fan_out(args.fan_out)),
            ):
                medians, cpu_used = {}, {}
                for node_type in ("noop", "bench.noop"):
                    created = await stub.CreateWorkflow(
                        workflow_pb2.CreateWorkflowRequest(
                            definition_json=jsonutil.dumps(with_type(shape, node_type))
                        ),
                        timeout=60,
                    )
                    await engine_bench._settle(database_url)
                    times, used = await engine_bench._time_runs(stub, created.id, args.runs, cpu)
                    medians[node_type] = statistics.median(times)
                    cpu_used[node_type] = sum(used.values())
                    print(
                        f"{label + ' ' + node_type:<34} median {medians[node_type] * 1000:8.1f} ms"
                        f"   min {min(times) * 1000:8.1f}   max {max(times) * 1000:8.1f}   CPU "
                        + ", ".join(f"{name} {s * 1000:.0f} ms" for name, s in used.items()),
                        flush=True,
                    )
                ratio = medians["bench.noop"] / medians["noop"]
                ratios.append(ratio)
                verdict = "within" if ratio <= BOUND else "OVER"
                # CPU of all the processes per run: steadier than wall time on a shared box.
                cpu_ratio = cpu_used["bench.noop"] / cpu_used["noop"]
                print(
                    f"{label:<34} custom / built-in = {ratio:.2f}x ({verdict} {BOUND}x); "
                    f"CPU per run {cpu_ratio:.2f}x"
                )
            print(
                f"machine speed after: calibration loop {engine_bench.calibration_ms():.0f} ms",
                flush=True,
            )
            await channel.close()
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
            await engine_bench._drop(pg_name)
    return ratios


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topology", choices=["embedded", "production", "both"], default="both")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--node-replicas", type=int, default=1)
    parser.add_argument("--fan-out", type=int, default=1000)
    parser.add_argument("--chain", type=int, default=100)
    args = parser.parse_args()
    kinds = ["embedded", "production"] if args.topology == "both" else [args.topology]
    summary = {kind: await measure(kind, args) for kind in kinds}
    for kind, (chain_ratio, fan_ratio) in summary.items():
        print(f"{kind:<11} chain {chain_ratio:.2f}x, fan-out {fan_ratio:.2f}x (bound {BOUND}x)")


if __name__ == "__main__":
    asyncio.run(main())
