"""Per execution through the HTTP API: many small workflows, as many users send them.

    python bench/throughput.py [--topology embedded|production|both] [--seconds 10]

Three figures per stack (started as bench/http_path.py starts them):
1. sequential run-and-wait of `input -> template -> output`: p50/p99 of one
   `POST /run` after another (one client: the SDK's `AsyncClient.run`, where a user stands),
   and beside it, the two taking turns, the same through a raw socket (the server's share
   without a client library's per-request work);
2. throughput of a 10-node workflow (input -> 8 noop -> output) with 20 clients, each
   running run-and-wait (the SDK's) in a loop: executions/s and the p50/p99 of a run;
3. submit latency at a fixed offered rate (100 executions/s, open loop: a submit is sent on
   schedule whether or not the previous one answered): p50/p99 of `POST /execute`, then the
   time until every one of them ended.
Prints the CPU calibration before and after, and after each figure the CPU each group of
processes used per execution (gateway, workflow replicas, node replicas, log, the rest; the
embedded stack is one process): steadier than wall time on a shared machine; on the
production topology also the infrastructure's (its PostgreSQL backends, RabbitMQ, Redis:
the last two are shared with whatever else runs on the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from heddle_sdk import AsyncClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import calibration_ms
from http_path import RUN_WAIT_S, client, create, infrastructure_pids, running

TEMPLATE = {
    "name": "tp-template",
    "inputs": {"name": {"type": "string", "required": False}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "greet", "type": "template", "params": {"template": "hello {{ inputs.name }}"}},
        {"id": "done", "type": "output", "params": {"value": "{{ greet.text }}"}},
    ],
    "edges": [{"source": "start", "target": "greet"}, {"source": "greet", "target": "done"}],
}


def ten_nodes() -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "input"}]
    nodes += [{"id": f"n{i}", "type": "noop"} for i in range(8)]
    nodes.append({"id": "done", "type": "output", "params": {"value": "ok"}})
    ids = [node["id"] for node in nodes]
    edges = [{"source": a, "target": b} for a, b in itertools.pairwise(ids)]
    return {"name": "tp-ten", "nodes": nodes, "edges": edges}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_group(pids: dict[str, int]) -> dict[str, float]:
    groups: dict[str, float] = {}
    for name, pid in pids.items():
        group = name.split("-")[0] if name.split("-")[0] in GROUPS else "other"
        groups[group] = groups.get(group, 0.0) + _cpu_s(pid)
    return groups


GROUPS = ("embedded", "gateway", "workflow", "node", "log")


def cpu_line(before: dict[str, float], after: dict[str, float], executions: int) -> str:
    per = {g: (after[g] - before[g]) * 1000 / max(1, executions) for g in after}
    return "CPU ms/execution: " + ", ".join(f"{g} {per[g]:.2f}" for g in sorted(per))


async def infrastructure_cpu(target: Any) -> dict[int, tuple[str, float]]:
    """pid -> (group, CPU seconds so far) of the infrastructure working for the production
    topology (http_path.infrastructure_pids: its PostgreSQL backends, RabbitMQ, Redis)."""
    groups = await infrastructure_pids(target) if target.database else {}
    return {pid: (name, _cpu_s(pid)) for name, pids in groups.items() for pid in pids}


def infrastructure_line(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], executions: int
) -> str:
    per: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        # A backend that connected during the phase: all of its CPU is the phase's. One that
        # disconnected during it is lost (the pools keep theirs).
        per[name] = per.get(name, 0.0) + seconds - before.get(pid, (name, 0.0))[1]
    if not per:
        return ""
    return "; infrastructure CPU ms/execution: " + ", ".join(
        f"{name} {seconds * 1000 / max(1, executions):.2f}" for name, seconds in sorted(per.items())
    )


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(values: list[float]) -> str:
    return (
        f"p50 {quantile(values, 0.5) * 1000:.1f} ms, p99 {quantile(values, 0.99) * 1000:.1f} ms"
        f" (n={len(values)})"
    )


class RawRun:
    """POST /run of one workflow on a keep-alive HTTP/1.1 connection of its own, the request
    one write of prepared bytes, the answer read by its Content-Length: what the server's
    side of a run costs without a client library's (httpx's) per-request work."""

    def __init__(self, target: Any, workflow_id: str, inputs: dict[str, Any]) -> None:
        self.url = httpx.URL(target.url)
        body = json.dumps({"inputs": inputs}).encode()
        self.request = (
            f"POST /api/v1/workflows/{workflow_id}/run?wait={RUN_WAIT_S:g} HTTP/1.1\r\n"
            f"host: {self.url.host}\r\nauthorization: Bearer {target.key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def run(self) -> float:
        """Seconds from the request's write to the end of the answer (a 200 that succeeded)."""
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.url.host, self.url.port)
        reader, writer = self.streams
        start = time.perf_counter()
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        body = await reader.readexactly(int(fields["content-length"]))
        elapsed = time.perf_counter() - start
        if lines[0].split()[1] != "200" or json.loads(body)["status"] != "succeeded":
            raise SystemExit(f"run answered {lines[0]}: {body[:300]!r}")
        return elapsed

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


async def sdk_run(sdk: AsyncClient, workflow_id: str, inputs: dict[str, Any]) -> float:
    """Seconds of one `AsyncClient.run` (POST /run, the answer parsed into an Execution)."""
    start = time.perf_counter()
    execution = await sdk.run(workflow_id, inputs, timeout=RUN_WAIT_S)
    elapsed = time.perf_counter() - start
    if execution.status != "succeeded":
        raise SystemExit(f"execution {execution.id} {execution.status}: {execution.error}")
    return elapsed


async def sequential(target: Any, workflow_id: str, count: int) -> tuple[str, int]:
    """One run after another, the SDK's and a raw socket's (RawRun) taking turns, so that
    both figures meet the same load: their difference is the client library's share."""
    raw = RawRun(target, workflow_id, {"name": "Ada"})
    try:
        async with AsyncClient(target.url, target.key, timeout=RUN_WAIT_S + 30) as sdk:
            for _ in range(5):
                await sdk_run(sdk, workflow_id, {"name": "warm"})
                await raw.run()
            times: list[float] = []
            raw_times: list[float] = []
            for _ in range(count):
                times.append(await sdk_run(sdk, workflow_id, {"name": "Ada"}))
                raw_times.append(await raw.run())
    finally:
        await raw.close()
    return (
        f"sequential run-and-wait input->template->output, SDK AsyncClient: {ms(times)} "
        f"(raw-socket client in turn: {ms(raw_times)})"
    ), len(times) + len(raw_times)


async def concurrent(
    target: Any, workflow_id: str, clients: int, seconds: float
) -> tuple[str, int]:
    deadline = time.perf_counter() + seconds
    times: list[float] = []

    async def one_client() -> None:
        async with AsyncClient(target.url, target.key, timeout=RUN_WAIT_S + 30) as sdk:
            while time.perf_counter() < deadline:
                times.append(await sdk_run(sdk, workflow_id, {}))

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    return (
        f"{clients} clients x 10-node run-and-wait: {len(times) / elapsed:.0f} executions/s "
        f"({len(times) * 10 / elapsed:.0f} node runs/s), run {ms(times)}"
    ), len(times)


async def offered_rate(
    target: Any, workflow_id: str, rate: float, seconds: float
) -> tuple[str, int]:
    submits: list[float] = []
    ids: list[str] = []
    failed: dict[str, int] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with client(target, limits=limits) as http:

        async def submit() -> None:
            start = time.perf_counter()
            try:
                response = await http.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
            except httpx.TransportError as error:  # counted and reported, not fatal
                failed[type(error).__name__] = failed.get(type(error).__name__, 0) + 1
                return
            submits.append(time.perf_counter() - start)
            if response.status_code != 202:
                failed[str(response.status_code)] = failed.get(str(response.status_code), 0) + 1
                return
            ids.append(response.json()["execution_id"])

        tasks = []
        begin = time.perf_counter()
        for index in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, begin + index / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(submit()))
        await asyncio.gather(*tasks)
        sent_in = time.perf_counter() - begin
        for execution_id in ids:  # every one ends: nothing was accepted and dropped
            while True:
                response = await http.get(
                    f"/api/v1/executions/{execution_id}", params={"view": "summary"}
                )
                if response.json()["status"] in {"succeeded", "failed", "cancelled"}:
                    break
                await asyncio.sleep(0.05)
        drained = time.perf_counter() - begin
    return (
        f"submit at {rate:g}/s for {seconds:g} s (offered over {sent_in:.1f} s): {ms(submits)}; "
        f"all {len(ids)} ended after {drained:.1f} s"
        + (f"; FAILED submits: {failed}" if failed else "")
    ), len(ids)


async def bench(kind: str, args: argparse.Namespace) -> list[str]:
    lines = []
    async with running(kind) as target, client(target) as http:
        template = await create(http, TEMPLATE)
        ten = await create(http, ten_nodes())
        phases = {
            "sequential": lambda: sequential(target, template, args.sequential),
            "clients": lambda: concurrent(target, ten, args.clients, args.seconds),
            "rate": lambda: offered_rate(target, ten, args.rate, args.seconds),
        }
        for name, phase in phases.items():
            if name not in args.phases:
                continue
            infrastructure = await infrastructure_cpu(target)
            before = cpu_by_group(target.pids)
            line, executions = await phase()  # printed as each ends
            line += f"; {cpu_line(before, cpu_by_group(target.pids), executions)}"
            line += infrastructure_line(
                infrastructure, await infrastructure_cpu(target), executions
            )
            print(f"  {kind:10} {line}", flush=True)
            lines.append(line)
    return lines


async def main_async(args: argparse.Namespace) -> None:
    kinds = ["embedded", "production"] if args.topology == "both" else [args.topology]
    print(f"calibration before: {calibration_ms():.0f} ms (~175 ms at full speed)", flush=True)
    results = {kind: await bench(kind, args) for kind in kinds}
    print(f"calibration after: {calibration_ms():.0f} ms", flush=True)
    print("\nsummary:")
    for kind, lines in results.items():
        for line in lines:
            print(f"  {kind:10} {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topology", choices=["embedded", "production", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sequential", type=int, default=200, help="sequential runs")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="offered executions/s")
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=["sequential", "clients", "rate"],
        default=["sequential", "clients", "rate"],
        help="which figures to take (sequential: the run-and-wait p50/p99 alone)",
    )
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
