"""wait_event on the production topology (two workflow replicas, RabbitMQ, PostgreSQL): an
event resumes its node once, an early event is kept, a timeout fails the node, and many
executions waiting at once all resume exactly once after every process was restarted.

The suite runs that last test with 200 waiters (it must end within the 120 s per-test
timeout on a 2-core machine); the acceptance figure, 1,000, is a benchmark run (bench/README.md):

    HEDDLE_BENCH_WAITERS=1000 .venv/bin/python -m pytest tests/e2e/test_wait_event.py \
        -k survive -s -p no:randomly --timeout 900
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import E2E, create_workflow, get_execution, run_sync, wait_final
from tests.helpers import assert_eventually

pytestmark = pytest.mark.e2e

EXTRA_ENV = {
    # 1,000 executions waiting at once are above the default tenant quota of 100.
    "HEDDLE_QUOTA_MAX_CONCURRENT_EXECUTIONS": "0",
    # Queues of our own: another topology on the same RabbitMQ (a concurrent test run) must
    # not consume this one's node.waiting events.
    "HEDDLE_BROKER_PREFIX": f"wait-{uuid.uuid4().hex[:8]}",
    # Delays of 2 s and more are workflow-service timers here (the default is 60 s).
    "HEDDLE_DELAY_TIMER_MIN_S": "2",
}
WAITERS = int(os.environ.get("HEDDLE_BENCH_WAITERS", "200"))
#: The workflow replicas' /metrics tell how many executions they hold loaded and parked.
E2E_METRICS = True

DEFINITION: dict[str, Any] = {
    "name": "waits-for-payment",
    "nodes": [
        {"id": "start", "type": "input"},
        {
            "id": "paid",
            "type": "wait_event",
            "params": {"name": "payment.received", "correlation_key": "{{ inputs.order }}"},
        },
        {"id": "done", "type": "output", "params": {"value": "{{ paid.data.amount }}"}},
    ],
    "edges": [{"source": "start", "target": "paid"}, {"source": "paid", "target": "done"}],
}


async def _start(client: httpx.AsyncClient, workflow_id: str, inputs: dict[str, Any]) -> str:
    response = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": inputs}
    )
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


async def _send(client: httpx.AsyncClient, key: str, data: Any) -> dict[str, Any]:
    body = {"name": "payment.received", "correlation_key": key, "data": data}
    for _ in range(60):
        response = await client.post("/api/v1/events", json=body)
        # 503 (with Retry-After): the replica driving the execution is busy taking over
        # after a restart; the waiter stays indexed and a client sends the event again.
        if response.status_code != 503:
            break
        await asyncio.sleep(0.5)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


async def _node_status(client: httpx.AsyncClient, execution_id: str, node_id: str) -> str:
    execution = await get_execution(client, execution_id)
    if execution is None:
        return ""
    for node in execution.get("nodes", []):
        if node["node_id"] == node_id:
            status: str = node["status"]
            return status
    return ""


async def _waiters(e2e: E2E) -> int:
    rows = await e2e.fetch("SELECT count(*) AS n FROM event_waiters")
    count: int = rows[0]["n"]
    return count


async def test_an_event_resumes_its_node_once_and_an_early_event_is_kept(
    topology: E2E,
) -> None:
    async with topology.client() as client:
        workflow_id = await create_workflow(client, DEFINITION)
        waiting = await _start(client, workflow_id, {"order": "o-1"})

        async def indexed() -> bool:
            return await _node_status(client, waiting, "paid") == "waiting" and bool(
                await topology.fetch("SELECT 1 FROM event_waiters WHERE execution_id = $1", waiting)
            )

        await assert_eventually(indexed, timeout=30, interval=0.2)
        # An event for another key resumes nothing and is kept.
        other = await _send(client, "o-unrelated", {"amount": 0})
        assert other["resumed"] == [] and other["kept_until"]
        accepted = await _send(client, "o-1", {"amount": 42})
        assert accepted["resumed"] == [{"execution_id": waiting, "node_id": "paid"}]
        execution = await wait_final(client, waiting)
        assert execution["status"] == "succeeded", execution
        assert execution["outputs"] == {"done": 42}
        # The same event again finds no waiter: kept, never applied twice.
        again = await _send(client, "o-1", {"amount": 43})
        assert again["resumed"] == []

        # Early: the event first, then the execution that waits for it.
        early = await _send(client, "o-early", {"amount": 7})
        assert early["resumed"] == [] and early["kept_until"]
        late = await _start(client, workflow_id, {"order": "o-early"})
        execution = await wait_final(client, late)
        assert execution["status"] == "succeeded", execution
        assert execution["outputs"] == {"done": 7}
        consumed = await topology.fetch(
            "SELECT consumed_at, delivered_to FROM received_events WHERE id = $1", early["id"]
        )
        assert consumed[0]["consumed_at"] is not None and consumed[0]["delivered_to"] == 1


async def test_a_wait_that_times_out_fails_its_node(topology: E2E) -> None:
    definition = {
        **DEFINITION,
        "name": "waits-briefly",
        "nodes": [
            DEFINITION["nodes"][0],
            {**DEFINITION["nodes"][1], "params": {"name": "never", "timeout_s": 1}},
            DEFINITION["nodes"][2],
        ],
    }
    async with topology.client() as client:
        workflow_id = await create_workflow(client, definition)
        execution = await wait_final(client, await _start(client, workflow_id, {"order": "x"}))
        assert execution["status"] == "failed", execution
        paid = next(node for node in execution["nodes"] if node["node_id"] == "paid")
        assert paid["status"] == "failed"


async def _gauges(e2e: E2E) -> dict[str, float]:
    """heddle_executions_loaded and _parked summed over the workflow replicas."""
    totals = {"loaded": 0.0, "parked": 0.0}
    async with httpx.AsyncClient(timeout=10) as client:
        for name in _workflow_replicas(e2e):
            spec = e2e.topology.spec(name)
            text = (await client.get(f"http://{spec.host}:{spec.metrics_port}/metrics")).text
            for family in text_string_to_metric_families(text):
                for kind in totals:
                    if family.name == f"heddle_executions_{kind}":
                        totals[kind] += sum(sample.value for sample in family.samples)
    return totals


async def _parked_exactly(e2e: E2E, parked: int, timeout: float) -> None:  # noqa: ASYNC109 (a polling budget)
    """Eventually `parked` executions are parked and none is loaded (asserted at the end)."""
    seen: dict[str, float] = {}

    async def settled() -> bool:
        seen.update(await _gauges(e2e))
        return seen == {"loaded": 0.0, "parked": float(parked)}

    await assert_eventually(settled, timeout=timeout, interval=0.3)


async def test_a_parked_wait_with_a_timeout_is_reloaded_by_its_timer(topology: E2E) -> None:
    definition = {
        **DEFINITION,
        "name": "waits-parked",
        "nodes": [
            DEFINITION["nodes"][0],
            {**DEFINITION["nodes"][1], "params": {"name": "never", "timeout_s": 3}},
            DEFINITION["nodes"][2],
        ],
    }
    async with topology.client() as client:
        workflow_id = await create_workflow(client, definition)
        started = time.monotonic()
        execution_id = await _start(client, workflow_id, {"order": "x"})
        # While it waits the replica holds no runner for it, only its timer.
        await _parked_exactly(topology, 1, timeout=2.5)
        execution = await wait_final(client, execution_id)
        assert time.monotonic() - started >= 3
        assert execution["status"] == "failed", execution
        paid = next(node for node in execution["nodes"] if node["node_id"] == "paid")
        assert paid["status"] == "failed" and paid["error"]["type"] == "Timeout", (
            execution["error"],
            paid,
        )
        assert paid["attempts"] == 1, paid
    await _parked_exactly(topology, 0, timeout=10)


async def test_a_delay_is_a_timer_its_execution_parked_while_it_runs(topology: E2E) -> None:
    definition = {
        "name": "naps",
        "nodes": [
            {"id": "start", "type": "input"},
            {"id": "nap", "type": "delay", "params": {"seconds": 3}},
        ],
        "edges": [{"source": "start", "target": "nap"}],
    }
    async with topology.client() as client:
        workflow_id = await create_workflow(client, definition)
        started = time.monotonic()
        execution_id = await _start(client, workflow_id, {})
        # No node attempt sleeps and no runner is loaded: a timer of the owning replica.
        await _parked_exactly(topology, 1, timeout=2.5)
        execution = await wait_final(client, execution_id)
        assert time.monotonic() - started >= 3
        assert execution["status"] == "succeeded", execution
        nap = next(node for node in execution["nodes"] if node["node_id"] == "nap")
        assert nap["output"] == {"waited_s": 3} and nap["attempts"] == 1, nap
    await _parked_exactly(topology, 0, timeout=10)


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _workflow_replicas(e2e: E2E) -> list[str]:
    return [spec.name for spec in e2e.topology.specs if spec.name.startswith("workflow")]


async def test_waiting_executions_survive_a_restart_and_resume_exactly_once(
    topology: E2E,
) -> None:
    replicas = _workflow_replicas(topology)
    async with topology.client(timeout=60) as client:
        workflow_id = await create_workflow(client, {**DEFINITION, "name": "thousand-waits"})
        before_waiters = await _waiters(topology)
        rss_before = {name: _rss_kb(topology.topology.pid(name)) for name in replicas}
        gate = asyncio.Semaphore(64)

        async def start(n: int) -> str:
            async with gate:
                return await _start(client, workflow_id, {"order": f"bulk-{n}"})

        phase = time.monotonic()
        executions = await asyncio.gather(*(start(n) for n in range(WAITERS)))
        print(f"\nstarted {WAITERS} executions in {time.monotonic() - phase:.1f} s")

        async def all_indexed() -> bool:
            return await _waiters(topology) - before_waiters >= WAITERS

        await assert_eventually(all_indexed, timeout=max(60, WAITERS / 10), interval=0.5)
        print(f"\nall waiting and indexed after {time.monotonic() - phase:.1f} s")
        # Every waiter unloaded: no runner (no task, no core) for any of them.
        await _parked_exactly(topology, WAITERS, timeout=30)
        cpu_start = {name: _cpu_s(topology.topology.pid(name)) for name in replicas}
        await asyncio.sleep(3.0)
        grown = 0
        for name in replicas:
            pid = topology.topology.pid(name)
            rss = _rss_kb(pid)
            grown += rss - rss_before[name]
            idle_cpu = (_cpu_s(pid) - cpu_start[name]) / 3.0
            print(
                f"\n{name}: RSS {rss_before[name]} kB before, {rss} kB with the waiters, "
                f"CPU {idle_cpu * 100:.1f} % of a core while they wait"
            )
        print(f"\n{WAITERS} waiters: {grown * 1024 / WAITERS:.0f} B of RSS each (all replicas)")

    # Restart everything while they wait: all stopped at once (SIGTERM), then started again.
    phase = time.monotonic()
    topology.topology.stop(grace=15)
    for spec in topology.topology.specs:
        topology.topology.start(spec.name)
    # On a loop of its own, as the fixture does (its probes do not mix with pytest-asyncio).
    run_sync(topology.topology.wait_healthy(timeout_s=60))
    print(f"\nrestarted every process in {time.monotonic() - phase:.1f} s")
    # The new replicas took every waiter over from the database and parked it again.
    await _parked_exactly(topology, WAITERS, timeout=max(60, WAITERS / 10))
    print(f"\nall parked again after {time.monotonic() - phase:.1f} s")

    async with topology.client(timeout=60) as client:
        gate = asyncio.Semaphore(64)

        async def send(n: int) -> dict[str, Any]:
            async with gate:
                return await _send(client, f"bulk-{n}", {"amount": n})

        answers = await asyncio.gather(*(send(n) for n in range(WAITERS)))
        resumed = [item["execution_id"] for answer in answers for item in answer["resumed"]]
        # No waiter was resumed twice. (An event answered 503 whose SubmitInput still reached
        # its node is not counted here when sent again: the node had stopped waiting.)
        assert len(resumed) == len(set(resumed)) and set(resumed) <= set(executions)
        print(f"\n{len(resumed)} of {WAITERS} events answered with the node they resumed")

        started = time.monotonic()
        outputs: dict[str, Any] = {}
        pending = set(executions)

        async def all_succeeded() -> bool:
            for execution_id in list(pending)[:100]:
                execution = await get_execution(client, execution_id)
                if execution and execution["status"] == "succeeded":
                    outputs[execution_id] = execution["outputs"]["done"]
                    pending.discard(execution_id)
                elif execution and execution["status"] in ("failed", "cancelled"):
                    raise AssertionError(f"{execution_id} {execution['status']}: {execution}")
            return not pending

        await assert_eventually(all_succeeded, timeout=max(60, WAITERS / 5), interval=0.5)
        took = time.monotonic() - started
        print(f"\n{WAITERS} executions resumed in {took:.1f} s after the events")
        assert sorted(outputs[e] for e in executions) == list(range(WAITERS))
    assert await _waiters(topology) == before_waiters
    # Resumed exactly once: one completion of the waiting node per execution.
    rows = await topology.fetch(
        "SELECT execution_id, count(*) AS n FROM execution_events WHERE node_id = 'paid' "
        "AND type = 'node.completed' AND execution_id = ANY($1::text[]) GROUP BY execution_id",
        executions,
    )
    assert sorted(row["n"] for row in rows) == [1] * WAITERS
    # Ended: nothing of them is held, parked or loaded.
    await _parked_exactly(topology, 0, timeout=30)
