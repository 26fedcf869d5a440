"""Logs of a run are queryable through the API, filtered by node and level."""

from __future__ import annotations

import httpx

from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow, run, wait_final

LOUD = {
    "name": "loud",
    "nodes": [
        {
            "id": "talk",
            "type": "code",
            "params": {"language": "python", "source": "print('hello from talk')\nresult = 1"},
        },
        {
            "id": "quiet",
            "type": "code",
            "params": {"language": "python", "source": "result = 2"},
        },
    ],
    "edges": [{"source": "talk", "target": "quiet"}],
}


async def test_node_logs_are_queryable_by_node_and_level(client: httpx.AsyncClient) -> None:
    execution_id = await run(client, await create_workflow(client, LOUD))
    assert (await wait_final(client, execution_id))["status"] == "succeeded"

    async def logged() -> list[dict]:
        response = await client.get(
            f"/api/v1/executions/{execution_id}/logs", params={"node_id": "talk"}
        )
        assert response.status_code == 200, response.text
        return response.json()["records"]

    await assert_eventually(logged, timeout=10)
    records = await logged()
    assert any("hello from talk" in record["message"] for record in records)
    assert {record["node_id"] for record in records} == {"talk"}

    quiet = await client.get(f"/api/v1/executions/{execution_id}/logs", params={"node_id": "quiet"})
    assert quiet.json()["records"] == []
    errors_only = await client.get(
        f"/api/v1/executions/{execution_id}/logs", params={"node_id": "talk", "level": "error"}
    )
    assert errors_only.status_code == 200
    assert errors_only.json()["records"] == []


async def test_what_a_failing_node_printed_is_in_the_run_logs(client: httpx.AsyncClient) -> None:
    failing = {
        "name": "prints-then-fails",
        "nodes": [
            {
                "id": "boom",
                "type": "code",
                "params": {
                    "language": "python",
                    "source": "print('about to fail')\nraise ValueError('nope')",
                },
            }
        ],
    }
    execution_id = await run(client, await create_workflow(client, failing))
    assert (await wait_final(client, execution_id))["status"] == "failed"

    async def printed() -> list[str]:
        response = await client.get(
            f"/api/v1/executions/{execution_id}/logs", params={"node_id": "boom"}
        )
        assert response.status_code == 200, response.text
        return [record["message"] for record in response.json()["records"]]

    await assert_eventually(printed, timeout=10)
    assert any("about to fail" in message for message in await printed())
