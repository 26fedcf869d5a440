"""Fairness between tenants (issue #20): while tenant A's fan-out holds every node slot of the
replica, tenant B's small run gets slots as soon as A's attempts end (its equal share), and
finishes long before A; with the rule off, B waits behind A's whole fan-out."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack
from services.gateway.auth import ADMIN_SCOPES
from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow, run, wait_final
from tests.security.support import bearer, new_key

WIDTH = 40
FLOOD = {
    "name": "flood",
    "nodes": [{"id": f"d{i}", "type": "delay", "params": {"seconds": 0.25}} for i in range(WIDTH)],
}
SMALL = {
    "name": "small",
    "nodes": [
        {"id": "a", "type": "noop"},
        {"id": "b", "type": "noop"},
        {"id": "c", "type": "noop"},
    ],
    "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"}],
}
SLOTS = {"max_concurrency_global": 4, "rate_limit_burst": 100_000, "rate_limit_per_s": 10_000}


async def _small_run_against_flood(stack: Stack, client: httpx.AsyncClient) -> int:
    """How many of A's nodes had finished when B's small run ended."""
    token, _ = await new_key(stack, tenant="tenant-b", scopes=ADMIN_SCOPES, name="b")
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers=bearer(token), timeout=60
    ) as tenant_b:
        small = await create_workflow(tenant_b, SMALL)
        flood = await create_workflow(client, FLOOD)
        flood_id = await run(client, flood)

        async def saturated() -> bool:
            execution = (await client.get(f"/api/v1/executions/{flood_id}")).json()
            return sum(n["status"] == "running" for n in execution["nodes"]) >= 4

        await assert_eventually(saturated, timeout=20, message="A never took the slots")
        finished_b = await wait_final(tenant_b, await run(tenant_b, small), timeout=60)
        assert finished_b["status"] == "succeeded", finished_b["error"]
        execution: dict[str, Any] = (await client.get(f"/api/v1/executions/{flood_id}")).json()
        done = sum(n["status"] == "succeeded" for n in execution["nodes"])
        await wait_final(client, flood_id, timeout=60)
        return done


@pytest.mark.parametrize("stack", [{**SLOTS, "tenant_fairness": True}], indirect=True)
async def test_a_small_run_is_not_starved_by_another_tenants_fan_out(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    done = await _small_run_against_flood(stack, client)
    # B's three nodes took three of the slots A's attempts freed, one after the other.
    assert done <= WIDTH // 2, f"B waited for {done} of A's {WIDTH} nodes"


@pytest.mark.parametrize("stack", [{**SLOTS, "tenant_fairness": False}], indirect=True)
async def test_without_the_rule_the_small_run_waits_behind_the_fan_out(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    done = await _small_run_against_flood(stack, client)
    assert done >= WIDTH - 8, f"B finished after only {done} of A's {WIDTH} nodes"
