"""Cron schedules through the broker: executions appear on the embedded stack, and a fire
published twice starts one execution."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from heddle.v1 import events_pb2
from prometheus_client import REGISTRY

from libs.cli.stack import Stack
from libs.common.bus import TRIGGERS_EXCHANGE
from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow, wait_final

TICK = {
    "name": "tick",
    "inputs": {"who": {"type": "string", "default": "cron"}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "done", "type": "output", "params": {"value": {"by": "{{ inputs.who }}"}}},
    ],
    "edges": [{"source": "start", "target": "done"}],
}


def _triggers_handled() -> float:
    """Trigger fires the workflow service has handled and acknowledged (this process's
    registry: the embedded stack runs every service here)."""
    value = REGISTRY.get_sample_value(
        "heddle_bus_messages_consumed_total", {"queue": "workflow.triggers", "outcome": "ack"}
    )
    return value or 0.0


async def _executions(client: httpx.AsyncClient, workflow_id: str) -> list[dict]:
    response = await client.get(
        "/api/v1/executions", params={"workflow_id": workflow_id, "page_size": 200}
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


@pytest.mark.parametrize("stack", [{"tick_s": 0.2}], indirect=True)
async def test_a_schedule_every_second_starts_executions(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client, TICK)
    created = await client.post(
        "/api/v1/schedules",
        json={"workflow_id": workflow_id, "cron": "* * * * * *", "inputs": {"who": "every-second"}},
    )
    assert created.status_code == 201, created.text
    schedule_id = created.json()["id"]

    async def three() -> bool:
        return len(await _executions(client, workflow_id)) >= 3

    await assert_eventually(three, timeout=15, interval=0.2)
    disabled = await client.put(
        f"/api/v1/schedules/{schedule_id}",
        json={"workflow_id": workflow_id, "cron": "* * * * * *", "enabled": False},
    )
    assert disabled.status_code == 200, disabled.text
    executions = await _executions(client, workflow_id)
    assert {e["trigger"] for e in executions} == {"schedule"}
    finished = await wait_final(client, executions[-1]["id"])
    assert finished["outputs"] == {"by": "every-second"}
    # One execution per fire: their dedupe keys (idempotency keys) are all distinct.
    keys = [e["idempotency_key"] for e in executions]
    assert len(keys) == len(set(keys))


async def test_the_same_fire_published_twice_starts_one_execution(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client, TICK)
    scheduled = Timestamp()
    scheduled.FromDatetime(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    fire = events_pb2.TriggerFire(
        dedupe_key=f"sched-1:{scheduled.ToJsonString()}",
        workflow_id=workflow_id,
        schedule_id="sched-1",
        scheduled_time=scheduled,
        source="schedule",
        tenant_id="default",
    )
    handled = _triggers_handled()
    for _ in range(2):
        await stack.bus.publish(TRIGGERS_EXCHANGE, "trigger.schedule", fire.SerializeToString())

    # Both deliveries handled (acknowledged) before counting: counted any earlier, a second
    # execution could still be on its way.
    await assert_eventually(
        lambda: _triggers_handled() >= handled + 2, timeout=10, message="fires not handled"
    )
    only = await _executions(client, workflow_id)
    assert len(only) == 1
    assert (await wait_final(client, only[0]["id"]))["status"] == "succeeded"
    # A third delivery of the same fire, after the first finished: still the one execution.
    await stack.bus.publish(TRIGGERS_EXCHANGE, "trigger.schedule", fire.SerializeToString())
    await assert_eventually(
        lambda: _triggers_handled() >= handled + 3, timeout=10, message="third fire not handled"
    )
    assert len(await _executions(client, workflow_id)) == 1
