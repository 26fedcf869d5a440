"""The user's path: workloads submitted through the HTTP API, timed from submit to terminal.

    python bench/http_path.py [--topology embedded|production|both] [--runs 5] [--no-celery]

W1 is input -> 1000 noop -> merge, W2 input -> a chain of 100 noop. Each run is one
`POST /api/v1/workflows/{id}/run` (start, wait for the end, answer with the outcome): the
client-observed time is that request's round trip, the server-reported one the execution's
`duration_ms` (started_at -> finished_at). The stacks start as users start them:

- embedded: the stack `make run` (`heddle serve`) starts, one process, SQLite, in a child
  process of the bench (the client does not share its event loop);
- production: the topology `make up` (`heddle up`) starts: every service a process (2
  workflow, 3 node replicas), PostgreSQL (a fresh database), events relayed to RabbitMQ and
  consumed by the log service, Redis;
- Celery 5.x in the same run (RabbitMQ broker, Redis results, prefork 2): a chord for the
  fan-out, a chain for the chain.

Prints a CPU calibration (bench/engine.py's loop) before and after, medians with min/max.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from engine import _cpu_seconds, calibration_ms  # noqa: E402


def fan_out(width: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "input"}]
    nodes += [{"id": f"n{i}", "type": "noop"} for i in range(width)]
    nodes.append({"id": "join", "type": "merge", "params": {"mode": "all"}})
    edges = [{"source": "start", "target": f"n{i}"} for i in range(width)]
    edges += [{"source": f"n{i}", "target": "join"} for i in range(width)]
    return {"name": f"http-fan-out-{width}", "nodes": nodes, "edges": edges}


def chain(length: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "input"}]
    nodes += [{"id": f"n{i}", "type": "noop"} for i in range(length)]
    edges = [{"source": "start", "target": "n0"}]
    edges += [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(length - 1)]
    return {"name": f"http-chain-{length}", "nodes": nodes, "edges": edges}


# One API key and tenant send every request of the bench: the per-key rate limit (50/s by
# default) and the tenant quota of 100 running executions
# would measure themselves. Both are still checked on every request (its Redis round trip stays in).
#: How long one run-and-wait may take (the route's most is 300 s): BENCH_RUN_WAIT_S.
RUN_WAIT_S = float(os.environ.get("BENCH_RUN_WAIT_S", "120"))
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"

BENCH_LIMITS = {
    "rate_limit_per_s": 1_000_000.0,
    "rate_limit_burst": 1_000_000,
    "quota_max_concurrent_executions": 100_000,
    # --width 10000 (the 10,000-wide fan-out target) is beyond the default definition limits.
    "max_definition_nodes": 100_000,
    "max_definition_edges": 500_000,
    "max_body_bytes": 64 * 1024 * 1024,
}


@dataclass
class Target:
    """A running Heddle whose HTTP API the bench drives."""

    name: str
    url: str
    key: str
    stop: Callable[[], None]
    pids: dict[str, int]
    database: str = ""  # the production topology's PostgreSQL database
    broker_prefix: str = ""  # ...and the prefix of its exchanges and queues


# ------------------------------------------------------------------------ embedded stack


async def _serve_embedded(database_url: str) -> None:
    """Child mode: the embedded stack as `heddle serve` starts it, on free ports; prints
    {"url", "key"} on one line, runs until SIGTERM."""
    from libs.cli.stack import start_stack
    from libs.common.runtime import run_until_signalled
    from libs.common.secrets import generate_key

    stack = await start_stack(
        {"database_url": database_url, "secrets_key": generate_key(), **BENCH_LIMITS},
        ephemeral_ports=True,
    )
    print(json.dumps({"url": stack.gateway_url, "key": stack.admin_key}), flush=True)
    try:
        await run_until_signalled()
    finally:
        await stack.stop()


def start_embedded(tmp: str) -> Target:
    env = {**os.environ, "HEDDLE_LOG_LEVEL": "WARNING"}
    log = open(f"{tmp}/embedded.log", "wb")  # noqa: SIM115
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve-embedded", f"sqlite+aiosqlite:///{tmp}/heddle.db"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        raise SystemExit(f"the embedded stack did not start; see {tmp}/embedded.log")
    started = json.loads(line)

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)

    return Target("embedded", started["url"], started["key"], stop, {"embedded": child.pid})


# ------------------------------------------------------------------- production topology


async def start_production(tmp: str) -> tuple[Target, str]:
    """`make up`'s topology on free ports and a fresh PostgreSQL database; (target, db)."""
    from libs.cli.topology import TopologyPorts, default_topology, ensure_database, spawn_topology
    from libs.common.secrets import generate_key
    from services.gateway.auth import new_api_key

    run_id = uuid.uuid4().hex[:8]
    database = f"heddle_http_bench_{run_id}"
    # A deployment of its own on the shared RabbitMQ (as the tests' topologies are): without
    # a prefix its log service shared the `log.webhooks` queue (and the events exchange)
    # with any other unprefixed deployment running at the time, each consuming some of the
    # other's events.
    prefix = f"httpbench{run_id}"
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
    await ensure_database(url)
    key = new_api_key()[0]
    specs = default_topology(
        ports=TopologyPorts.free(),
        database_url=url,
        log_level="WARNING",
        extra_env={
            "HEDDLE_BOOTSTRAP_API_KEY": key,
            "HEDDLE_SECRETS_KEY": generate_key(),
            "HEDDLE_BROKER_PREFIX": prefix,
            "HEDDLE_LEADER_LEASE_NAME": f"{prefix}:scheduler:leader",
            **{f"HEDDLE_{name.upper()}": str(value) for name, value in BENCH_LIMITS.items()},
        },
    )
    topology = spawn_topology(specs, f"{tmp}/log", cwd=ROOT)
    try:
        await topology.wait_healthy(timeout_s=90)
    except BaseException:
        topology.stop()
        raise
    pids = {spec.name: topology.pid(spec.name) for spec in specs}
    target = Target("production", topology.gateway_url, key, topology.stop, pids, database, prefix)
    return target, database


async def delete_broker_names(prefix: str) -> None:
    """Delete the durable exchanges and queues of the bench's deployment (they would stay on
    the broker); needs rabbitmqctl to list them, else they are left and named."""
    import aio_pika

    def names(kind: str) -> list[str]:
        try:
            done = subprocess.run(
                ["rabbitmqctl", "-q", f"list_{kind}", "name"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [name for name in done.stdout.split() if name.startswith(f"{prefix}.")]

    queues, exchanges = names("queues"), names("exchanges")
    if not queues and not exchanges:
        print(f"  (left on the broker: the queues and exchanges named {prefix}.*)", flush=True)
        return
    connection = await aio_pika.connect(os.environ.get("BENCH_BROKER_URL", BROKER_URL))
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)


async def infrastructure_pids(target: Target) -> dict[str, list[int]]:
    """The processes of the shared infrastructure that work for the production topology:
    RabbitMQ (beam.smp) and Redis (shared, so other engineers' traffic is in their figures
    too) and the PostgreSQL backends connected to the bench's database (its own)."""
    import asyncpg

    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", target.database
        )
    finally:
        await admin.close()
    return _local_infrastructure([row["pid"] for row in rows])


def _local_infrastructure(backends: list[int]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for name, pattern in (("rabbitmq (shared)", "beam.smp"), ("redis (shared)", "redis-server")):
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        if found.stdout.split():
            groups[name] = [int(found.stdout.split()[0])]
    if backends and all(os.path.exists(f"/proc/{pid}") for pid in backends):  # a local server
        groups["postgres backends"] = backends
    return groups


async def drop_database(name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def running(kind: str) -> AsyncIterator[Target]:
    with tempfile.TemporaryDirectory(prefix=f"heddle-http-{kind}-") as tmp:
        database = None
        if kind == "embedded":
            target = start_embedded(tmp)
        else:
            target, database = await start_production(tmp)
        try:
            yield target
        finally:
            target.stop()
            if database:
                await drop_database(database)
            if target.broker_prefix:
                await delete_broker_names(target.broker_prefix)


def client(target: Target, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=target.url,
        headers={"Authorization": f"Bearer {target.key}"},
        timeout=RUN_WAIT_S + 30,
        **kwargs,
    )


async def create(http: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    response = await http.post("/api/v1/workflows", json=definition)
    response.raise_for_status()
    workflow_id: str = response.json()["id"]
    return workflow_id


async def run_and_wait(
    http: httpx.AsyncClient, workflow_id: str, inputs: dict[str, Any] | None = None
) -> tuple[float, float]:
    """(client-observed s, server-reported s) of one run through POST /run."""
    start = time.perf_counter()
    response = await http.post(
        f"/api/v1/workflows/{workflow_id}/run",
        params={"wait": RUN_WAIT_S},
        json={"inputs": inputs or {}},
    )
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise SystemExit(f"run answered {response.status_code}: {response.text[:300]}")
    body = response.json()
    if body["status"] != "succeeded":
        raise SystemExit(f"execution {body['id']} {body['status']}: {body.get('error')}")
    return elapsed, (body.get("duration_ms") or 0.0) / 1000


def _process_cpu(
    pids: dict[str, int], infrastructure: dict[str, list[int]] | None = None
) -> dict[str, float]:
    """CPU seconds used so far per process group (replicas summed: workflow-1 and
    workflow-2 are 'workflow'); infrastructure groups keyed 'infra:<name>'."""
    groups: dict[str, list[int]] = {}
    for name, pid in pids.items():
        groups.setdefault(name.rsplit("-", 1)[0] if name[-1].isdigit() else name, []).append(pid)
    for name, members in (infrastructure or {}).items():
        groups[f"infra:{name}"] = members
    used: dict[str, float] = {}
    for group, members in groups.items():
        # A PostgreSQL backend may end between two readings: count the ones still there.
        alive = [pid for pid in members if os.path.exists(f"/proc/{pid}")]
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            used[group] = _cpu_seconds(alive)
    return used


def _cpu_line(before: dict[str, float], after: dict[str, float], runs: int) -> str:
    used = {name: (after[name] - before[name]) / runs for name in before if name in after}
    ours = {name: s for name, s in used.items() if not name.startswith("infra:")}
    infra = {name[6:]: s for name, s in used.items() if name.startswith("infra:")}
    line = f"CPU ms per run: Heddle {sum(ours.values()) * 1000:.0f} = " + ", ".join(
        f"{name} {seconds * 1000:.0f}" for name, seconds in ours.items()
    )
    if infra:
        line += "; infrastructure " + ", ".join(
            f"{name} {seconds * 1000:.0f}" for name, seconds in infra.items()
        )
    return line


def _stats(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.3f} s "
        f"(min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"
    )


async def detail_reads(http: httpx.AsyncClient, workflow_id: str) -> str:
    """GET of the latest execution of workflow_id: full, ?view=summary, and a 304."""
    listing = await http.get("/api/v1/executions", params={"workflow_id": workflow_id})
    execution_id = listing.json()["items"][0]["id"]
    path = f"/api/v1/executions/{execution_id}"
    figures = []
    cases: tuple[tuple[str, dict[str, str], dict[str, str] | None], ...] = (
        ("full", {}, {}),
        ("summary", {"view": "summary"}, {}),
        ("full 304", {}, None),
    )
    for name, params, headers in cases:
        if headers is None:
            headers = {"If-None-Match": (await http.get(path)).headers["etag"]}
        times, size = [], 0
        for _ in range(5):
            start = time.perf_counter()
            response = await http.get(path, params=params, headers=headers)
            times.append(time.perf_counter() - start)
            size = len(response.content)
        figures.append(f"{name} {statistics.median(times) * 1000:.1f} ms ({size} bytes)")
    return ", ".join(figures)


async def bench_heddle(
    kind: str, runs: int, width: int, length: int, workloads_wanted: str = "both"
) -> dict[str, str]:
    results: dict[str, str] = {}
    async with running(kind) as target, client(target) as http:
        workloads = {}
        if workloads_wanted in ("both", "w1"):
            workloads[f"W1 input -> {width} noop -> merge"] = await create(http, fan_out(width))
        if workloads_wanted in ("both", "w2"):
            workloads[f"W2 input -> chain of {length} noop"] = await create(http, chain(length))
        for label, workflow_id in workloads.items():
            await run_and_wait(http, workflow_id)  # warm-up: plans, caches, connections
            observed, reported = [], []
            # CPU per run is steadier than wall time on a shared machine (bench/engine.py).
            infrastructure = await infrastructure_pids(target) if target.database else {}
            cpu_before = _process_cpu(target.pids, infrastructure)
            for _ in range(runs):
                seen, server = await run_and_wait(http, workflow_id)
                observed.append(seen)
                reported.append(server)
            cpu = _cpu_line(cpu_before, _process_cpu(target.pids, infrastructure), runs)
            results[label] = (
                f"client {_stats(observed)}; server-reported median "
                f"{statistics.median(reported):.3f} s"
            )
            results[f"{label[:2]} {cpu.split(':')[0]}"] = cpu.split(": ", 1)[1]
            print(f"  {kind:10} {label[:2]} {cpu}", flush=True)
            if label.startswith("W1"):
                reads = await detail_reads(http, workflow_id)
                results["GET of a W1 execution"] = reads
                print(f"  {kind:10} GET of a W1 execution: {reads}", flush=True)
            print(f"  {kind:10} {label}: {results[label]}", flush=True)
    return results


# ------------------------------------------------------------------------------- Celery


@contextlib.contextmanager
def celery_worker(tmp: str) -> Any:
    queue = f"heddle-bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "BENCH_CELERY_QUEUE": queue}
    log = open(f"{tmp}/celery.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_peer",
            "worker",
            "--pool",
            "prefork",
            "-c",
            "2",
            "-Q",
            queue,
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=BENCH,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    os.environ["BENCH_CELERY_QUEUE"] = queue
    try:
        yield worker
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        # The worker's durable queue would stay on the shared broker.
        import celery_peer

        with celery_peer.app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)


def bench_celery(runs: int, width: int, length: int) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="heddle-http-celery-") as tmp, celery_worker(tmp):
        import celery_peer
        from celery import chain as celery_chain
        from celery import chord, group

        celery_peer.app.conf.task_default_queue = os.environ["BENCH_CELERY_QUEUE"]
        noop, merge = celery_peer.noop, celery_peer.merge
        noop.delay(1).get(timeout=60)  # the worker is up

        def fan() -> Any:
            return chord(group(noop.s(i) for i in range(width)), merge.s()).apply_async()

        def line() -> Any:
            return celery_chain(noop.s(0), *(noop.s() for _ in range(length - 1))).apply_async()

        results = {}
        for label, make in (
            (f"W1 input -> {width} noop -> merge", fan),
            (f"W2 input -> chain of {length} noop", line),
        ):
            make().get(timeout=120)  # warm-up
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                make().get(timeout=120)
                times.append(time.perf_counter() - start)
            results[label] = f"client {_stats(times)}"
            print(f"  {'celery':10} {label}: {results[label]}", flush=True)
        return results


async def main_async(args: argparse.Namespace) -> None:
    kinds = ["embedded", "production"] if args.topology == "both" else [args.topology]
    print(f"calibration before: {calibration_ms():.0f} ms (~175 ms at full speed)", flush=True)
    table: dict[str, dict[str, str]] = {}
    for kind in kinds:
        table[kind] = await bench_heddle(kind, args.runs, args.width, args.length, args.workloads)
    if not args.no_celery:
        table["celery"] = await asyncio.to_thread(bench_celery, args.runs, args.width, args.length)
    print(f"calibration after: {calibration_ms():.0f} ms", flush=True)
    print("\nsummary (submit -> terminal through the API; Celery: apply_async -> get):")
    for kind, rows in table.items():
        for label, figure in rows.items():
            print(f"  {kind:10} {label:34} {figure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topology", choices=["embedded", "production", "both"], default="both")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--width", type=int, default=1000, help="fan-out width of W1")
    parser.add_argument("--length", type=int, default=100, help="chain length of W2")
    parser.add_argument("--no-celery", action="store_true", help="skip the Celery peer")
    parser.add_argument("--workloads", choices=["w1", "w2", "both"], default="both")
    parser.add_argument("--serve-embedded", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_embedded:
        asyncio.run(_serve_embedded(args.serve_embedded))
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
