"""Priorities (issue #20): while a low-priority fan-out holds every node slot of the replica,
a high-priority run's ready nodes take the slots that free up before the fan-out's remaining
ones (tenant fairness on); with equal priorities the run waits behind the fan-out."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow, wait_final

WIDTH = 40
FLOOD = {
    "name": "flood",
    "nodes": [{"id": f"d{i}", "type": "delay", "params": {"seconds": 0.25}} for i in range(WIDTH)],
}
URGENT = {
    "name": "urgent",
    "nodes": [{"id": n, "type": "noop"} for n in "abc"],
    "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}],
}
SLOTS = {
    "max_concurrency_global": 4,
    "rate_limit_burst": 100_000,
    "rate_limit_per_s": 10_000,
    "tenant_fairness": True,
}


async def _execute(client: httpx.AsyncClient, workflow_id: str, priority: int | None) -> str:
    body: dict[str, Any] = {"inputs": {}}
    if priority is not None:
        body["priority"] = priority
    response = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["execution_id"])


async def _flood_done_when_urgent_ends(
    client: httpx.AsyncClient, flood_priority: int | None, urgent_priority: int | None
) -> int:
    flood = await create_workflow(client, FLOOD)
    urgent = await create_workflow(client, URGENT)
    flood_id = await _execute(client, flood, flood_priority)

    async def saturated() -> bool:
        execution = (await client.get(f"/api/v1/executions/{flood_id}")).json()
        return sum(n["status"] == "running" for n in execution["nodes"]) >= 4

    await assert_eventually(saturated, timeout=20, message="the fan-out never took the slots")
    finished = await wait_final(client, await _execute(client, urgent, urgent_priority), timeout=60)
    assert finished["status"] == "succeeded", finished["error"]
    execution = (await client.get(f"/api/v1/executions/{flood_id}")).json()
    done = sum(n["status"] in ("succeeded", "running") for n in execution["nodes"])
    assert (await wait_final(client, flood_id, timeout=60))["status"] == "succeeded"
    return done


@pytest.mark.parametrize("stack", [SLOTS], indirect=True)
async def test_a_high_priority_run_goes_before_a_low_priority_fan_out(
    client: httpx.AsyncClient,
) -> None:
    done = await _flood_done_when_urgent_ends(client, 1, 9)
    # The urgent run's three nodes took three of the slots the fan-out's attempts freed.
    assert done <= WIDTH // 2, f"the urgent run waited for {done} of {WIDTH} nodes"


@pytest.mark.parametrize("stack", [SLOTS], indirect=True)
async def test_with_equal_priorities_the_run_waits_behind_the_fan_out(
    client: httpx.AsyncClient,
) -> None:
    done = await _flood_done_when_urgent_ends(client, None, None)
    assert done >= WIDTH - 8, f"the run finished after only {done} of {WIDTH} nodes"


async def test_priority_outside_0_to_9_is_refused(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client, URGENT)
    response = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": {}, "priority": 10}
    )
    assert response.status_code == 422, response.text


async def test_the_priority_is_kept_with_the_execution(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client, URGENT)
    execution = await wait_final(client, await _execute(client, workflow_id, 7), timeout=30)
    assert execution["priority"] == 7
    listed = (await client.get("/api/v1/executions", params={"workflow_id": workflow_id})).json()
    assert [item["priority"] for item in listed["items"]] == [7]
    default = await wait_final(client, await _execute(client, workflow_id, None), timeout=30)
    assert default["priority"] == 5


async def test_a_schedule_starts_executions_with_its_priority(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client, URGENT)
    created = await client.post(
        "/api/v1/schedules",
        json={"workflow_id": workflow_id, "cron": "0 0 1 1 *", "priority": 8},
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["priority"] == 8
    refused = await client.post(
        "/api/v1/schedules", json={"workflow_id": workflow_id, "cron": "0 0 1 1 *", "priority": 12}
    )
    assert refused.status_code == 422, refused.text
    fired = await client.post(f"/api/v1/schedules/{schedule['id']}/trigger")
    assert fired.status_code < 300, fired.text

    async def started() -> bool:
        listed = await client.get("/api/v1/executions", params={"workflow_id": workflow_id})
        return len(listed.json()["items"]) == 1

    await assert_eventually(started, timeout=15, message="the schedule started nothing")
    listed = await client.get("/api/v1/executions", params={"workflow_id": workflow_id})
    (execution,) = listed.json()["items"]
    assert execution["priority"] == 8
