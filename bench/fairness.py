"""Fairness between tenants: tenant B's small runs while tenant A floods the replica.

    python bench/fairness.py [--width 5000] [--runs 30] [--slots 64] [--fairness on|off|both]

On the embedded stack (one process, SQLite), with the replica's node slots
(`max_concurrency_global`) set small so that A's fan-out saturates them: tenant A starts one
execution of input -> <width> delay nodes (50 ms each) -> merge; tenant B runs input -> noop
-> output `runs` times, one after the other, each timed from submit to its terminal status.
B's p50/p99 are printed idle (before A starts) and under A's flood, with the fairness rule
(`HEDDLE_TENANT_FAIRNESS`) on and off. The acceptance: under the flood, B's p99 stays under 3x
its idle p99 with the rule, and does not without it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from libs.cli.stack import start_stack  # noqa: E402

SMALL = {
    "name": "small",
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "work", "type": "noop"},
        {"id": "done", "type": "output", "params": {"value": "ok"}},
    ],
    "edges": [{"source": "start", "target": "work"}, {"source": "work", "target": "done"}],
}


def flood(width: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "input"}]
    nodes += [{"id": f"d{i}", "type": "delay", "params": {"seconds": 0.05}} for i in range(width)]
    nodes.append({"id": "join", "type": "merge", "params": {"mode": "all"}})
    edges = [{"source": "start", "target": f"d{i}"} for i in range(width)]
    edges += [{"source": f"d{i}", "target": "join"} for i in range(width)]
    return {"name": f"flood-{width}", "nodes": nodes, "edges": edges}


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_once(http: httpx.AsyncClient, workflow_id: str) -> float:
    began = time.perf_counter()
    response = await http.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    response.raise_for_status()
    execution_id = response.json()["execution_id"]
    while True:
        execution = (await http.get(f"/api/v1/executions/{execution_id}")).json()
        if execution["status"] in ("succeeded", "failed", "cancelled"):
            assert execution["status"] == "succeeded", execution
            return (time.perf_counter() - began) * 1000
        await asyncio.sleep(0.005)


async def series(http: httpx.AsyncClient, workflow_id: str, runs: int) -> list[float]:
    return [await run_once(http, workflow_id) for _ in range(runs)]


async def measure(fairness: bool, width: int, runs: int, slots: int) -> dict[str, float]:
    from services.gateway.auth import ADMIN_SCOPES

    with tempfile.TemporaryDirectory() as folder:
        stack = await start_stack(
            {
                "database_url": f"sqlite+aiosqlite:///{folder}/bench.db",
                "max_concurrency_global": slots,
                "max_concurrency_per_execution": 4096,
                "tenant_fairness": fairness,
                "rate_limit_burst": 100_000,
                "rate_limit_per_s": 100_000,
            },
            ephemeral_ports=True,
        )
        try:
            security = stack.services["gateway"].app.state.security
            _, token_b = await security.create_api_key(
                tenant_id="tenant-b", name="b", scopes=ADMIN_SCOPES, expires_at=None, created_by="x"
            )
            headers_a = {"Authorization": f"Bearer {stack.admin_key}"}
            headers_b = {"Authorization": f"Bearer {token_b}"}
            async with (
                httpx.AsyncClient(base_url=stack.gateway_url, headers=headers_a, timeout=600) as a,
                httpx.AsyncClient(base_url=stack.gateway_url, headers=headers_b, timeout=60) as b,
            ):
                small = (await b.post("/api/v1/workflows", json=SMALL)).json()["id"]
                big = (await a.post("/api/v1/workflows", json=flood(width))).json()["id"]
                await series(b, small, 3)  # warm up
                idle = await series(b, small, runs)
                started = await a.post(f"/api/v1/workflows/{big}/execute", json={})
                started.raise_for_status()
                flood_id = started.json()["execution_id"]
                # Let A's fan-out take the slots first.
                while True:
                    execution = (await a.get(f"/api/v1/executions/{flood_id}")).json()
                    running = sum(n["status"] == "running" for n in execution.get("nodes", []))
                    if running >= slots // 2 or execution["status"] != "running":
                        break
                    await asyncio.sleep(0.05)
                loaded = await series(b, small, runs)
                still = (await a.get(f"/api/v1/executions/{flood_id}")).json()["status"]
        finally:
            await stack.stop()
    return {
        "idle_p50": statistics.median(idle),
        "idle_p99": p(idle, 0.99),
        "flood_p50": statistics.median(loaded),
        "flood_p99": p(loaded, 0.99),
        "flood_still_running": float(still == "running"),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--fairness", choices=["on", "off", "both"], default="both")
    args = parser.parse_args()
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.fairness]
    for fairness in modes:
        result = await measure(fairness, args.width, args.runs, args.slots)
        ratio = result["flood_p99"] / result["idle_p99"]
        print(
            f"fairness {'on ' if fairness else 'off'}: tenant B 3-node runs, "
            f"idle p50 {result['idle_p50']:.0f} ms p99 {result['idle_p99']:.0f} ms; "
            f"under A's {args.width}-node fan-out p50 {result['flood_p50']:.0f} ms "
            f"p99 {result['flood_p99']:.0f} ms ({ratio:.1f}x idle p99; "
            f"A {'still running' if result['flood_still_running'] else 'had finished'})",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
