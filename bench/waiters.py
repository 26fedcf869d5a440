"""Waiting executions on the production topology: memory and CPU of the workflow replicas.

    python bench/waiters.py [--events 1000] [--waves 2] [--delays 10000] [--delay-s 30]
                            [--delay-waves 1]

Starts the topology `make up` starts (2 workflow, 3 node replicas, PostgreSQL in a fresh
database, RabbitMQ, Redis; every service a process), then:

- wait_event: N executions `input -> wait_event -> output`, each waiting for its own key;
  once all are parked, the RSS growth of each workflow replica per waiter and their CPU over
  5 s of idle waiting; then N events through POST /api/v1/events and the time until all have
  succeeded (each resumed exactly once: one node.completed of the waiting node each);
- delay: N executions `input -> delay(delay-s) -> output` (delays from 10 s on are timers of
  the workflow service here: HEDDLE_DELAY_TIMER_MIN_S=10); RSS growth per waiter at the peak
  of parked executions (workflow and node replicas), CPU while idle-waiting, the time from
  the first due timer until all have succeeded, and the RSS once all finished (a finished
  execution holds no memory: a second --delay-waves wave shows what stays).

The replicas' heddle_executions_loaded/_parked gauges (/metrics) say how many executions
each holds in memory. Prints a CPU calibration (bench/engine.py's loop) before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from engine import calibration_ms  # noqa: E402
from http_path import BENCH_LIMITS, drop_database  # noqa: E402

from libs.cli.topology import (  # noqa: E402
    RunningTopology,
    TopologyPorts,
    default_topology,
    ensure_database,
    spawn_topology,
)

WAIT_EVENT: dict[str, Any] = {
    "name": "bench-waits",
    "nodes": [
        {"id": "start", "type": "input"},
        {
            "id": "paid",
            "type": "wait_event",
            "params": {"name": "bench.paid", "correlation_key": "{{ inputs.key }}"},
        },
        {"id": "done", "type": "output", "params": {"value": "{{ paid.data.n }}"}},
    ],
    "edges": [{"source": "start", "target": "paid"}, {"source": "paid", "target": "done"}],
}


def delay_workflow(seconds: float) -> dict[str, Any]:
    return {
        "name": "bench-naps",
        "nodes": [
            {"id": "start", "type": "input"},
            {"id": "nap", "type": "delay", "params": {"seconds": seconds}},
            {"id": "done", "type": "output", "params": {"value": "{{ nap.waited_s }}"}},
        ],
        "edges": [{"source": "start", "target": "nap"}, {"source": "nap", "target": "done"}],
    }


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def anon_kb(pid: int) -> int:
    """The anonymous part of the RSS (the heaps; the rest is mapped files: code, libraries)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    return 0


def _allocator_figures(text: str) -> dict[str, int] | None:
    """pymalloc's and glibc's figures from one SIGUSR2 report (libs/common/memdebug.py)."""
    if "Total (incl. mmap):" not in text:
        return None
    figures: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        name, value = name.strip(), value.strip().replace(",", "")
        if name == "# arenas allocated current":
            figures["pymalloc_arenas"] = int(value)
        elif name == "# bytes in allocated blocks":
            figures["pymalloc_live"] = int(value)
        elif name == "Total" and "pymalloc_total" not in figures:
            figures["pymalloc_total"] = int(value)  # the first Total: pymalloc's arenas
    total = text.split("Total (incl. mmap):", 1)[1]
    for line in total.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "system bytes":
            figures["malloc_system"] = int(value)
        elif name.strip() == "in use bytes":
            figures["malloc_in_use"] = int(value)
    return figures


def _report_after(log_path: Path, offset: int) -> dict[str, int] | None:
    with open(log_path, errors="replace") as log_file:
        log_file.seek(offset)
        return _allocator_figures(log_file.read())


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read_snapshot(stem: Path) -> tuple[dict[str, Any], tracemalloc.Snapshot] | None:
    """The report and snapshot a replica wrote at `stem`, once both are there (renamed last)."""
    if not Path(f"{stem}.json").exists():
        return None
    report = json.loads(Path(f"{stem}.json").read_text())
    return report, tracemalloc.Snapshot.load(f"{stem}.tracemalloc")


class Snapshots:
    """SIGUSR1 to each workflow replica, then the snapshot it wrote (after a gc.collect()),
    compared with its previous one: traced memory, the engine's registries, the object
    types and the source lines that grew."""

    def __init__(self, topology: RunningTopology, replicas: list[str], folder: Path) -> None:
        self.topology = topology
        self.replicas = replicas
        self.folder = folder
        self.taken = 0
        self.last: dict[str, tuple[dict[str, Any], tracemalloc.Snapshot]] = {}

    async def take(self, label: str) -> None:
        self.taken += 1
        print(f"  memory snapshot {self.taken} ({label}):", flush=True)
        for name in self.replicas:
            pid = self.topology.pid(name)
            stem = self.folder / f"workflow-{pid}-{self.taken}"
            os.kill(pid, signal.SIGUSR1)
            for _ in range(1200):
                written = await asyncio.to_thread(_read_snapshot, stem)
                if written is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit(f"{name} wrote no snapshot {stem}.json within 120 s")
            report, snapshot = written
            print(
                f"    {name}: traced {report['traced_bytes'] / 2**20:.1f} MB, "
                f"rss {rss_kb(pid) / 1024:.1f} MB, held {report['probes'].get('engine')}",
                flush=True,
            )
            previous = self.last.get(name)
            self.last[name] = (report, snapshot)
            if previous is None:
                continue
            old_report, old_snapshot = previous
            print(
                f"      traced {(report['traced_bytes'] - old_report['traced_bytes']) / 1024:+.0f}"
                " kB since the previous snapshot; object types that grew most:",
                flush=True,
            )
            old_types = old_report["types"]
            grown = sorted(
                ((n - old_types.get(t, 0), t) for t, n in report["types"].items()), reverse=True
            )
            print("       ", ", ".join(f"{t} {d:+d}" for d, t in grown[:12] if d), flush=True)
            for stat in snapshot.compare_to(old_snapshot, "lineno")[:12]:
                print(f"        {stat}", flush=True)
            # Where the memory that grew in our code was allocated, by whom (the frames kept).
            ours = [
                stat
                for stat in snapshot.compare_to(old_snapshot, "traceback")
                if stat.size_diff > 0 and str(ROOT) in str(stat.traceback)
            ]
            for stat in ours[:4]:
                print(f"        {stat.size_diff / 1024:+.0f} KiB, {stat.count_diff:+d} blocks:")
                for line in stat.traceback.format(most_recent_first=True)[:16]:
                    print(f"          {line}", flush=True)


class Bench:
    def __init__(self, topology: RunningTopology, dsn: str, key: str) -> None:
        self.topology = topology
        self.dsn = dsn
        self.replicas = [s.name for s in topology.specs if s.name.startswith("workflow")]
        #: The node replicas: a delay below HEDDLE_DELAY_TIMER_MIN_S is an attempt there.
        self.node_replicas = [s.name for s in topology.specs if s.name.startswith("node")]
        #: Memory snapshots of the workflow replicas (--tracemalloc), else None.
        self.snapshots: Snapshots | None = None
        #: The replicas print their allocators' statistics on SIGUSR2 (--workflow-env).
        self.malloc_stats = False
        #: 5xx answers to execute and events (each sent again), by status.
        self.refused: dict[int, int] = {}
        self.http = httpx.AsyncClient(
            base_url=topology.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )

    async def gauges(self) -> dict[str, dict[str, float]]:
        """{replica: {"loaded": n, "parked": n}}."""
        out: dict[str, dict[str, float]] = {}
        async with httpx.AsyncClient(timeout=10) as client:
            for name in self.replicas:
                spec = self.topology.spec(name)
                text = (await client.get(f"http://{spec.host}:{spec.metrics_port}/metrics")).text
                values = {"loaded": 0.0, "parked": 0.0}
                for family in text_string_to_metric_families(text):
                    for kind in values:
                        if family.name == f"heddle_executions_{kind}":
                            values[kind] = sum(s.value for s in family.samples)
                out[name] = values
        return out

    def rss(self) -> dict[str, int]:
        return {name: rss_kb(self.topology.pid(name)) for name in self.replicas}

    def anon(self) -> dict[str, int]:
        return {name: anon_kb(self.topology.pid(name)) for name in self.replicas}

    async def allocators(self, label: str) -> None:
        """With HEDDLE_DEBUG_MALLOC_STATS=1 (--workflow-env): SIGUSR2 makes each workflow
        replica print pymalloc's and glibc's statistics to its log; the figures shown."""
        if not self.malloc_stats:
            return
        print(f"  allocators ({label}):", flush=True)
        for name in self.replicas:
            log_path = self.topology.log_path(name)
            offset = log_path.stat().st_size
            os.kill(self.topology.pid(name), signal.SIGUSR2)
            for _ in range(300):
                await asyncio.sleep(0.1)
                figures = await asyncio.to_thread(_report_after, log_path, offset)
                if figures is not None:
                    break
            else:
                raise SystemExit(f"{name} printed no allocator statistics within 30 s")
            mb = 2**20
            # No pymalloc figures under PYTHONMALLOC=malloc: every object is malloc's.
            pymalloc = (
                f"pymalloc {figures['pymalloc_arenas']} arenas, "
                f"{figures['pymalloc_total'] / mb:.1f} MB, "
                f"{figures['pymalloc_live'] / mb:.1f} MB in live blocks"
                if "pymalloc_arenas" in figures
                else "no pymalloc"
            )
            print(
                f"    {name}: RSS {rss_kb(self.topology.pid(name)) / 1024:.1f} MB; "
                f"{pymalloc}; glibc malloc "
                f"{figures['malloc_system'] / mb:.1f} MB from the system, "
                f"{figures['malloc_in_use'] / mb:.1f} MB in use",
                flush=True,
            )

    def node_rss(self) -> dict[str, int]:
        return {name: rss_kb(self.topology.pid(name)) for name in self.node_replicas}

    def print_growth(self, label: str, before: dict[str, int], now: dict[str, int]) -> None:
        shown = ", ".join(
            f"{name} {before[name] / 1024:.1f} -> {now[name] / 1024:.1f} MB "
            f"({(now[name] - before[name]) / 1024:+.1f})"
            for name in before
        )
        print(f"  {label}: {shown}", flush=True)

    async def idle_cpu(self, seconds: float = 5.0) -> dict[str, float]:
        start = {name: cpu_s(self.topology.pid(name)) for name in self.replicas}
        await asyncio.sleep(seconds)
        return {
            name: (cpu_s(self.topology.pid(name)) - start[name]) / seconds * 100
            for name in self.replicas
        }

    async def create(self, definition: dict[str, Any]) -> str:
        response = await self.http.post("/api/v1/workflows", json=definition)
        response.raise_for_status()
        workflow_id: str = response.json()["id"]
        return workflow_id

    async def start_many(
        self, workflow_id: str, inputs: list[dict[str, Any]], clients: int
    ) -> None:
        gate = asyncio.Semaphore(clients)

        async def one(body: dict[str, Any]) -> None:
            async with gate:
                for _ in range(60):
                    try:
                        response = await self.http.post(
                            f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": body}
                        )
                    except httpx.TransportError:
                        # A kept-alive connection the gateway closed while idle (between
                        # waves): sent again, counted under 0.
                        self.refused[0] = self.refused.get(0, 0) + 1
                        continue
                    if response.status_code < 500:
                        break
                    # The shared PostgreSQL out of connections: sent again, counted.
                    code = response.status_code
                    self.refused[code] = self.refused.get(code, 0) + 1
                    await asyncio.sleep(0.5)
                if response.status_code != 202:
                    raise SystemExit(f"execute answered {response.status_code}: {response.text}")

        await asyncio.gather(*(one(body) for body in inputs))

    async def count(self, workflow_id: str, status: str) -> int:
        connection = await asyncpg.connect(self.dsn)
        try:
            n: int = await connection.fetchval(
                "SELECT count(*) FROM executions WHERE workflow_id = $1 AND status = $2",
                workflow_id,
                status,
            )
        finally:
            await connection.close()
        return n

    async def completions_of(self, workflow_id: str, node_id: str) -> list[int]:
        connection = await asyncpg.connect(self.dsn)
        try:
            rows = await connection.fetch(
                "SELECT count(*) AS n FROM execution_events e JOIN executions x "
                "ON x.id = e.execution_id WHERE x.workflow_id = $1 AND e.node_id = $2 "
                "AND e.type = 'node.completed' GROUP BY e.execution_id",
                workflow_id,
                node_id,
            )
        finally:
            await connection.close()
        return [row["n"] for row in rows]

    async def until(self, what: str, predicate: Any, limit_s: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            try:
                if await predicate():
                    return time.monotonic() - started
            except asyncpg.TooManyConnectionsError:
                pass  # the shared PostgreSQL is full for a moment: look again

            await asyncio.sleep(0.5)
        raise SystemExit(f"timed out after {limit_s:.0f} s waiting for {what}")

    def report(self, label: str, before: dict[str, int], n: int, cpu: dict[str, float]) -> None:
        after = self.rss()
        for name in self.replicas:
            grown = after[name] - before[name]
            print(
                f"  {name}: RSS {before[name] / 1024:.1f} -> {after[name] / 1024:.1f} MB "
                f"(+{grown / 1024:.1f} MB), idle CPU {cpu[name]:.1f} % of a core"
            )
        total = sum(after[name] - before[name] for name in self.replicas)
        print(f"  {label}: {total * 1024 / n:.0f} B of workflow-replica RSS per waiter", flush=True)

    async def warm_up(self, workflow_id: str, inputs: dict[str, Any]) -> None:
        # One execution first: imports, pools, the compiled definition are not per waiter.
        await self.start_many(workflow_id, [inputs], 1)

    async def bench_events(self, n: int, waves: int, clients: int) -> None:
        print(f"\nwait_event: {waves} waves of {n} executions", flush=True)
        workflow_id = await self.create(WAIT_EVENT)
        await self.warm_up(workflow_id, {"key": "warm"})
        await self.send_events(["warm"], clients)
        await self.until("the warm-up", lambda: self._done(workflow_id, 1), 60)
        for wave in range(waves):
            # Wave 1's growth includes the allocator's high-water mark of N executions being
            # started at once (freed memory a process keeps); a later wave's is what N more
            # parked executions hold.
            before = self.rss()
            started = time.monotonic()
            keys = [{"key": f"k{i}"} for i in range(wave * n, (wave + 1) * n)]
            await self.start_many(workflow_id, keys, clients)
            print(f"  wave {wave + 1}: started in {time.monotonic() - started:.1f} s", flush=True)
            took = await self.until(
                "all parked", lambda w=wave: self._parked(n * (w + 1)), max(120, n / 5)
            )
            print(f"  all parked {took:.1f} s later: {await self.gauges()}", flush=True)
            self.report(f"wait_event wave {wave + 1}", before, n, await self.idle_cpu())
        total = n * waves
        started = time.monotonic()
        await self.send_events([f"k{i}" for i in range(total)], clients)
        sent = time.monotonic() - started
        took = await self.until("all resumed", lambda: self._done(workflow_id, total + 1), total)
        print(
            f"  {total} events sent in {sent:.1f} s; "
            f"all succeeded {took + sent:.1f} s after the first"
        )
        print(f"  5xx answers (each event sent again): {self.refused or 'none'}")
        once = await self.completions_of(workflow_id, "paid")
        print(f"  resumed exactly once: {len(once) == total + 1 and set(once) == {1}}", flush=True)

    async def _relayed(self) -> bool:
        connection = await asyncpg.connect(self.dsn)
        try:
            left: int = await connection.fetchval("SELECT count(*) FROM event_outbox")
        finally:
            await connection.close()
        return left == 0

    async def _parked(self, n: int) -> bool:
        gauges = await self.gauges()
        return sum(g["parked"] for g in gauges.values()) >= n

    async def _done(self, workflow_id: str, n: int) -> bool:
        return await self.count(workflow_id, "succeeded") >= n

    async def send_events(self, keys: list[str], clients: int) -> None:
        gate = asyncio.Semaphore(clients)

        async def one(key: str) -> None:
            body = {"name": "bench.paid", "correlation_key": key, "data": {"n": key}}
            async with gate:
                for _ in range(60):
                    response = await self.http.post("/api/v1/events", json=body)
                    if response.status_code < 500:
                        break
                    # Sent again (the waiter stays indexed); counted and reported.
                    self.refused[response.status_code] = (
                        self.refused.get(response.status_code, 0) + 1
                    )
                    await asyncio.sleep(0.5)
                if response.status_code != 202:
                    raise SystemExit(f"event answered {response.status_code}: {response.text}")

        await asyncio.gather(*(one(key) for key in keys))

    async def settle(self, before: dict[str, int], before_anon: dict[str, int], s: float) -> None:
        """The workflow replicas' RSS every 5 s for `s` seconds once all finished, then the
        after-finish growth over the level before the starts (RSS and its anonymous part)."""
        started = time.monotonic()
        while True:
            now = self.rss()
            shown = ", ".join(f"{(now[k] - before[k]) / 1024:+.1f}" for k in self.replicas)
            print(f"    t+{time.monotonic() - started:4.0f} s: RSS {shown} MB", flush=True)
            if time.monotonic() - started >= s:
                break
            await asyncio.sleep(min(5.0, s))
        anon = self.anon()
        rss = sum(now[k] - before[k] for k in self.replicas)
        grown = sum(anon[k] - before_anon[k] for k in self.replicas)
        each = ", ".join(
            f"{k} {(now[k] - before[k]) / 1024:+.1f} "
            f"(anon {(anon[k] - before_anon[k]) / 1024:+.1f})"
            for k in self.replicas
        )
        print(
            f"  AFTER-FINISH RSS GROWTH, {s:.0f} s after the outbox drained: {each}; "
            f"workflow replicas {rss / 1024:+.1f} MB in all (anonymous {grown / 1024:+.1f} MB)",
            flush=True,
        )

    async def bench_delays(
        self, n: int, seconds: float, clients: int, settle_s: float = 30.0
    ) -> None:
        print(f"\ndelay: {n} executions waiting {seconds:g} s each", flush=True)
        workflow_id = await self.create(delay_workflow(seconds))
        warm = await self.create(delay_workflow(0))
        await self.warm_up(warm, {})
        await self.until("the warm-up", lambda: self._done(warm, 1), 60)
        if self.snapshots is not None and not self.snapshots.taken:
            await self.snapshots.take("before the first wave")
        await self.allocators("before the starts")
        before = self.rss()
        before_anon = self.anon()
        before_nodes = self.node_rss()
        started = time.monotonic()
        peak: dict[str, Any] = {"parked": 0.0}
        async with asyncio.TaskGroup() as group:
            starting = group.create_task(
                self.start_many(workflow_id, [{} for _ in range(n)], clients)
            )
            while not starting.done():
                # The submission may outlast the delay: the peak of executions waiting at once.
                gauges = await self.gauges()
                parked = sum(g["parked"] for g in gauges.values())
                if parked >= peak["parked"]:
                    peak = {
                        "parked": parked,
                        "rss": self.rss(),
                        "nodes": self.node_rss(),
                        "gauges": gauges,
                    }
                await asyncio.wait([starting], timeout=2.0)
        submit_s = time.monotonic() - started
        gauges = await self.gauges()
        parked = sum(g["parked"] for g in gauges.values())
        if parked >= peak["parked"]:
            peak = {"parked": parked, "rss": self.rss(), "nodes": self.node_rss(), "gauges": gauges}
        print(
            f"  started in {submit_s:.1f} s; at most {peak['parked']:.0f} waiting at once "
            f"({peak['gauges']}); the first timers are due {seconds:g} s after their start",
            flush=True,
        )
        for name in self.replicas:
            grown = peak["rss"][name] - before[name]
            print(f"  {name}: RSS +{grown / 1024:.1f} MB at that peak", flush=True)
        total = sum(peak["rss"][name] - before[name] for name in self.replicas)
        print(
            f"  delay: {total * 1024 / max(1.0, peak['parked']):.0f} B of workflow-replica RSS "
            f"per waiting execution at the peak ({total / 1024:.1f} MB in all)",
            flush=True,
        )
        self.print_growth("node replicas' RSS at that peak", before_nodes, peak["nodes"])
        if parked:
            cpu = await self.idle_cpu(min(5.0, max(1.0, seconds / 6)))
            shown = ", ".join(f"{name} {value:.1f} %" for name, value in cpu.items())
            print(f"  idle CPU (of a core) while {parked:.0f} wait: {shown}", flush=True)
        took = await self.until("all delays done", lambda: self._done(workflow_id, n), n + seconds)
        print(
            f"  all {n} succeeded {submit_s + took:.1f} s after the first start "
            f"({submit_s + took - seconds:.1f} s after the first timer was due)",
            flush=True,
        )
        print(f"  then: {await self.gauges()}", flush=True)
        # Their events relayed to the broker too (the relay's publishes in flight are not
        # memory a finished execution keeps): the outbox empty.
        took = await self.until("every event relayed", self._relayed, 300)
        print(f"  every event relayed {took:.1f} s later", flush=True)
        # A finished execution holds no memory: RSS back to the level before the starts,
        # give or take the allocator's high-water of the starts (freed, not returned).
        self.print_growth("workflow replicas' RSS once all finished", before, self.rss())
        self.print_growth("node replicas' RSS once all finished", before_nodes, self.node_rss())
        await self.settle(before, before_anon, settle_s)
        await self.allocators(f"{settle_s:.0f} s after the outbox drained")
        if self.snapshots is not None:
            await self.snapshots.take(f"once the {n} of this wave finished")
        print(
            "  5xx answers (each request sent again; 0: connection lost): "
            f"{self.refused or 'none'}",
            flush=True,
        )


async def main_async(args: argparse.Namespace) -> None:
    print(f"calibration before: {calibration_ms():.0f} ms (~175 ms at full speed)", flush=True)
    database = f"heddle_waiters_bench_{uuid.uuid4().hex[:8]}"
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
    await ensure_database(url)
    from libs.common.secrets import generate_key
    from services.gateway.auth import new_api_key

    key = new_api_key()[0]
    specs = default_topology(
        ports=TopologyPorts.free(metrics=True),
        database_url=url,
        log_level="WARNING",
        extra_env={
            "HEDDLE_BOOTSTRAP_API_KEY": key,
            "HEDDLE_SECRETS_KEY": generate_key(),
            "HEDDLE_DELAY_TIMER_MIN_S": "10",
            **{f"HEDDLE_{name.upper()}": str(value) for name, value in BENCH_LIMITS.items()},
        },
    )
    tmp = tempfile.mkdtemp(prefix="heddle-waiters-")
    print(f"process logs in {tmp}/log", flush=True)
    if args.tracemalloc:
        # The workflow replicas only: tracemalloc and a snapshot on each SIGUSR1
        # (libs/common/memdebug.py), taken before the first wave and once each wave finished.
        debug = {
            "HEDDLE_DEBUG_TRACEMALLOC": str(args.tracemalloc),
            "HEDDLE_DEBUG_TRACEMALLOC_DIR": f"{tmp}/snapshots",
        }
        specs = [
            dataclasses.replace(spec, env={**spec.env, **debug})
            if spec.name.startswith("workflow")
            else spec
            for spec in specs
        ]
        print(f"memory snapshots in {tmp}/snapshots", flush=True)
    if args.workflow_env:
        # A/B of the replicas' environment, e.g. MALLOC_ARENA_MAX=2 or
        # HEDDLE_MALLOC_TRIM_INTERVAL_S=0 (no trim once quiet).
        extra = dict(item.split("=", 1) for item in args.workflow_env)
        print(f"workflow replicas' extra environment: {extra}", flush=True)
        specs = [
            dataclasses.replace(spec, env={**spec.env, **extra})
            if spec.name.startswith("workflow")
            else spec
            for spec in specs
        ]
    topology = spawn_topology(specs, f"{tmp}/log", cwd=ROOT)
    try:
        await topology.wait_healthy(timeout_s=90)
        bench = Bench(topology, f"postgresql://postgres@127.0.0.1:5432/{database}", key)
        bench.malloc_stats = "HEDDLE_DEBUG_MALLOC_STATS=1" in args.workflow_env
        if args.tracemalloc:
            bench.snapshots = Snapshots(topology, bench.replicas, Path(tmp) / "snapshots")
        if args.events:
            await bench.bench_events(args.events, args.waves, args.clients)
        for _ in range(args.delay_waves if args.delays else 0):
            # A second wave starts from the RSS the first left: what is still held after
            # 2 x N finished executions beyond the first wave's high-water is what they keep.
            await bench.bench_delays(args.delays, args.delay_s, args.clients, args.settle_s)
        await bench.http.aclose()
    finally:
        topology.stop()
        await drop_database(database)
    print(f"\ncalibration after: {calibration_ms():.0f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="wait_event executions")
    parser.add_argument("--waves", type=int, default=2, help="waves of --events waiters")
    parser.add_argument("--delays", type=int, default=10_000, help="delay executions")
    parser.add_argument("--delay-s", type=float, default=30.0, help="each delay's length")
    parser.add_argument("--delay-waves", type=int, default=1, help="waves of --delays, in turn")
    parser.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients")
    parser.add_argument(
        "--settle-s",
        type=float,
        default=30.0,
        help="how long the workflow replicas' RSS is followed once a delay wave finished",
    )
    parser.add_argument(
        "--workflow-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the workflow replicas (repeatable), for A/B runs",
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        help="frames per allocation: tracemalloc snapshots of the workflow replicas before "
        "the first delay wave and once each finished, each compared with the previous (slow)",
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
