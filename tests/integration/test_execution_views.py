"""GET /api/v1/executions/{id}: ?view=summary (no node records), node pagination, ETag/304."""

from __future__ import annotations

import asyncio

import httpx

from tests.integration.helpers import create_workflow, get_execution, run, wait_final

FAN = {
    "name": "fan",
    "nodes": [
        {"id": "start", "type": "input"},
        *({"id": f"n{i}", "type": "noop"} for i in range(5)),
        {"id": "join", "type": "merge", "params": {"mode": "all"}},
    ],
    "edges": [
        *({"source": "start", "target": f"n{i}"} for i in range(5)),
        *({"source": f"n{i}", "target": "join"} for i in range(5)),
    ],
}


async def test_summary_view_has_the_execution_without_its_nodes(
    client: httpx.AsyncClient,
) -> None:
    execution_id = await run(client, await create_workflow(client, FAN))
    full = await wait_final(client, execution_id)
    assert len(full["nodes"]) == 7
    response = await client.get(f"/api/v1/executions/{execution_id}", params={"view": "summary"})
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["nodes"] == []
    assert {k: v for k, v in summary.items() if k != "nodes"} == {
        k: v for k, v in full.items() if k != "nodes"
    }
    bad = await client.get(f"/api/v1/executions/{execution_id}", params={"view": "nodes"})
    assert bad.status_code == 422
    missing = await client.get("/api/v1/executions/ex_missing", params={"view": "summary"})
    assert missing.status_code == 404


async def test_nodes_page_in_definition_order(client: httpx.AsyncClient) -> None:
    execution_id = await run(client, await create_workflow(client, FAN))
    full = await wait_final(client, execution_id)
    ids = [node["node_id"] for node in full["nodes"]]
    path = f"/api/v1/executions/{execution_id}"
    first = (await client.get(path, params={"node_limit": 3})).json()["nodes"]
    rest = (await client.get(path, params={"node_offset": 3})).json()["nodes"]
    middle = (await client.get(path, params={"node_offset": 2, "node_limit": 2})).json()["nodes"]
    assert [n["node_id"] for n in first] == ids[:3]
    assert [n["node_id"] for n in rest] == ids[3:]
    assert [n["node_id"] for n in middle] == ids[2:4]
    assert (await client.get(path, params={"node_limit": 0})).status_code == 422


async def test_etag_answers_304_until_the_execution_changes(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(
        client,
        {
            "name": "slow",
            "nodes": [
                {"id": "start", "type": "input"},
                {"id": "sleepy", "type": "delay", "params": {"seconds": 1.0}},
            ],
            "edges": [{"source": "start", "target": "sleepy"}],
        },
    )
    execution_id = await run(client, workflow_id)
    path = f"/api/v1/executions/{execution_id}"
    running = await client.get(path)
    etag = running.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    finished = await wait_final(client, execution_id)
    assert finished["status"] == "succeeded"
    changed = await client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    same = await client.get(path, headers={"If-None-Match": changed.headers["etag"]})
    assert same.status_code == 304 and same.content == b""
    assert same.headers["etag"] == changed.headers["etag"]
    listed = await client.get(path, headers={"If-None-Match": f'"x", {changed.headers["etag"]}'})
    assert listed.status_code == 304
    # The summary is another representation: its own validator.
    summary = await client.get(path, params={"view": "summary"})
    assert summary.headers["etag"] != changed.headers["etag"]
    again = await client.get(
        path, params={"view": "summary"}, headers={"If-None-Match": summary.headers["etag"]}
    )
    assert again.status_code == 304
    # So is a page of the nodes: the full view's validator does not answer for it.
    paged = await client.get(
        path, params={"node_limit": 1}, headers={"If-None-Match": changed.headers["etag"]}
    )
    assert paged.status_code == 200 and len(paged.json()["nodes"]) == 1
    assert paged.headers["etag"] != changed.headers["etag"]
    assert (await get_execution(client, execution_id))["status"] == "succeeded"


async def test_etag_changes_with_every_step_of_a_running_execution(
    client: httpx.AsyncClient,
) -> None:
    """The validator is (last_seq, status): a node's progress while the execution stays
    running is a new validator, and the answer to a stale one is the current body."""
    workflow_id = await create_workflow(
        client,
        {
            "name": "steps",
            "nodes": [
                {"id": "start", "type": "input"},
                {"id": "first", "type": "noop"},
                {"id": "sleepy", "type": "delay", "params": {"seconds": 1.0}},
            ],
            "edges": [
                {"source": "start", "target": "first"},
                {"source": "first", "target": "sleepy"},
            ],
        },
    )
    execution_id = await run(client, workflow_id)
    path = f"/api/v1/executions/{execution_id}"
    seen: dict[str, dict[str, object]] = {}
    for _ in range(500):  # the delay is 1 s: far fewer rounds than this
        response = await client.get(path)
        body = response.json()
        # The validator names the state the body was read at (nodes are read after the
        # execution's row, so they are never older than its last_seq).
        assert f".{body['last_seq']}.{body['status']}." in response.headers["etag"]
        seen.setdefault(response.headers["etag"], body)
        if body["status"] not in ("pending", "running"):
            break
        await asyncio.sleep(0.02)
    assert body["status"] == "succeeded"
    # At least: running with `first` done (sleepy in flight), then succeeded.
    assert len(seen) >= 2 and len({b["last_seq"] for b in seen.values()}) == len(seen)
    stale = next(iter(seen))
    current = await client.get(path, headers={"If-None-Match": stale})
    assert current.status_code == 200 and current.json() == body
