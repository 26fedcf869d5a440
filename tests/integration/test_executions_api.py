"""The executions and workflows API: listing and filtering, execution detail, versioning,
validation reports, error shapes and the node-type catalog."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from tests.integration.helpers import (
    create_workflow,
    events,
    node,
    run,
    wait_final,
    wait_status,
)

DIVIDE = {
    "name": "divide",
    "inputs": {"d": {"type": "number", "required": True}},
    "nodes": [
        {"id": "start", "type": "input"},
        {
            "id": "ratio",
            "type": "code",
            "params": {"source": "result = 10 / inputs['inputs']['d']"},
        },
        {"id": "done", "type": "output", "params": {"value": {"ratio": "{{ ratio.result }}"}}},
    ],
    "edges": [{"source": "start", "target": "ratio"}, {"source": "ratio", "target": "done"}],
}

NODE_TYPES = {
    "input",
    "output",
    "noop",
    "template",
    "transform",
    "condition",
    "switch",
    "merge",
    "delay",
    "http_request",
    "code",
    "llm",
    "agent",
    "tool",
    "map",
    "subworkflow",
    "human_input",
}


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def list_executions(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/executions", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


# ---------------------------------------------------------------------------- listing


async def test_list_filters_by_workflow_and_status_and_paginates(
    client: httpx.AsyncClient,
) -> None:
    divide = await create_workflow(client, DIVIDE)
    other = await create_workflow(client, {**DIVIDE, "name": "other"})
    ids = []
    for d in (2, 0, 5):
        ids.append(await run(client, divide, {"d": d}))
        await wait_final(client, ids[-1])
    other_id = await run(client, other, {"d": 1})
    await wait_final(client, other_id)
    ok_first, failed, ok_last = ids

    everything = await list_executions(client, workflow_id=divide)
    assert everything["total"] == 3
    # Newest first.
    assert [e["id"] for e in everything["items"]] == [ok_last, failed, ok_first]
    assert {e["workflow_id"] for e in everything["items"]} == {divide}
    # A list carries summaries: no node details.
    assert all(e["nodes"] == [] for e in everything["items"])

    only_failed = await list_executions(client, workflow_id=divide, status="failed")
    assert (only_failed["total"], [e["id"] for e in only_failed["items"]]) == (1, [failed])
    succeeded = await list_executions(client, workflow_id=divide, status="succeeded")
    assert [e["id"] for e in succeeded["items"]] == [ok_last, ok_first]
    assert (await list_executions(client, workflow_id=other))["total"] == 1
    assert (await list_executions(client, status="succeeded"))["total"] == 3

    first_page = await list_executions(client, workflow_id=divide, page=1, page_size=2)
    second_page = await list_executions(client, workflow_id=divide, page=2, page_size=2)
    assert (first_page["page"], first_page["page_size"], first_page["total"]) == (1, 2, 3)
    assert [e["id"] for e in first_page["items"]] == [ok_last, failed]
    assert [e["id"] for e in second_page["items"]] == [ok_first]
    beyond = await list_executions(client, workflow_id=divide, page=3, page_size=2)
    assert (beyond["items"], beyond["total"]) == ([], 3)

    bad_status = await client.get("/api/v1/executions", params={"status": "exploded"})
    assert bad_status.status_code == 422, bad_status.text
    assert bad_status.json()["error"]["code"] == "invalid_request"
    bad_page = await client.get("/api/v1/executions", params={"page": 0})
    assert bad_page.status_code == 422, bad_page.text


async def test_detail_has_every_node_with_status_attempts_output_error_timings(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(client, DIVIDE)
    ok = await wait_final(client, await run(client, workflow_id, {"d": 4}))
    assert ok["status"] == "succeeded", ok["error"]
    assert ok["workflow_id"] == workflow_id
    assert ok["workflow_version"] == 1
    assert ok["inputs"] == {"d": 4}
    assert ok["outputs"] == {"ratio": 2.5}
    assert ok["error"] is None
    assert ok["trigger"] == "api"
    created, started, finished = (
        parse_time(ok[k]) for k in ("created_at", "started_at", "finished_at")
    )
    assert created <= started <= finished
    assert ok["duration_ms"] == round((finished - started).total_seconds() * 1000, 3)
    assert [n["node_id"] for n in ok["nodes"]] == ["start", "ratio", "done"]
    assert [n["type"] for n in ok["nodes"]] == ["input", "code", "output"]
    for entry in ok["nodes"]:
        assert entry["status"] == "succeeded"
        assert entry["attempts"] == 1
        assert entry["error"] is None
        assert parse_time(entry["started_at"]) <= parse_time(entry["finished_at"])
        assert entry["duration_ms"] >= 0
        assert [a["status"] for a in entry["attempt_history"]] == ["succeeded"]
    assert node(ok, "ratio")["output"] == {"result": 2.5}
    assert node(ok, "done")["output"] == {"ratio": 2.5}
    # The sequence numbers of the stream end at the execution's last_seq.
    stream = await events(client, ok["id"])
    assert [e["seq"] for e in stream] == list(range(1, ok["last_seq"] + 1))

    failed = await wait_final(client, await run(client, workflow_id, {"d": 0}))
    assert failed["status"] == "failed"
    assert failed["outputs"] is None
    assert failed["error"]["type"] == "NodeFailed"
    ratio = node(failed, "ratio")
    assert ratio["status"] == "failed"
    assert ratio["output"] is None
    assert ratio["error"]["message"]
    assert "ZeroDivisionError" in ratio["error"]["type"] + ratio["error"]["message"]
    assert ratio["attempt_history"][0]["error"]["type"] == ratio["error"]["type"]
    assert ratio["finished_at"] is not None
    done = node(failed, "done")
    assert (done["status"], done["attempts"], done["started_at"]) == ("cancelled", 0, None)


# ---------------------------------------------------------------------------- versions


async def test_a_new_version_does_not_change_running_executions(
    client: httpx.AsyncClient,
) -> None:
    v1 = {
        "name": "versioned",
        "nodes": [
            {"id": "wait", "type": "delay", "params": {"seconds": 0.4}},
            {"id": "result", "type": "output", "params": {"value": {"shape": "v1"}}},
        ],
        "edges": [{"source": "wait", "target": "result"}],
    }
    v2 = {
        "name": "versioned",
        "nodes": [{"id": "answer", "type": "output", "params": {"value": {"shape": "v2", "n": 2}}}],
    }
    workflow_id = await create_workflow(client, v1)
    first = await run(client, workflow_id)
    await wait_status(client, first, "running", node_id="wait")

    updated = await client.put(f"/api/v1/workflows/{workflow_id}", json=v2)
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    second = await run(client, workflow_id)

    one = await wait_final(client, first)
    two = await wait_final(client, second)
    assert (one["status"], two["status"]) == ("succeeded", "succeeded")
    assert one["workflow_version"] == 1
    assert one["outputs"] == {"shape": "v1"}
    assert [n["node_id"] for n in one["nodes"]] == ["wait", "result"]
    assert two["workflow_version"] == 2
    assert two["outputs"] == {"shape": "v2", "n": 2}
    assert [n["node_id"] for n in two["nodes"]] == ["answer"]

    latest = (await client.get(f"/api/v1/workflows/{workflow_id}")).json()
    assert latest["version"] == 2
    assert latest["definition"]["nodes"][0]["id"] == "answer"
    old = (await client.get(f"/api/v1/workflows/{workflow_id}", params={"version": 1})).json()
    assert old["version"] == 1
    assert [n["id"] for n in old["definition"]["nodes"]] == ["wait", "result"]
    # An explicit version can still be executed.
    pinned = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": {}, "version": 1}
    )
    assert pinned.status_code == 202, pinned.text
    again = await wait_final(client, pinned.json()["execution_id"])
    assert (again["workflow_version"], again["outputs"]) == (1, {"shape": "v1"})


# ---------------------------------------------------------------------------- validation

BROKEN = {
    "name": "broken",
    "nodes": [
        {"id": "a", "type": "transform", "params": {"expression": "1"}},
        {"id": "b", "type": "noop"},
        {"id": "c", "type": "noop"},
        {"id": "a", "type": "noop"},
        {"id": "mystery", "type": "teleport"},
        {"id": "wait", "type": "delay", "params": {"seconds": "soon"}},
        {"id": "early", "type": "template", "params": {"template": "{{ late.text }}"}},
        {"id": "late", "type": "template", "params": {"template": "x"}},
        {"id": "check", "type": "condition", "params": {"expression": "true"}},
        {"id": "d", "type": "noop"},
    ],
    "edges": [
        {"source": "b", "target": "c"},
        {"source": "c", "target": "b"},
        {"source": "a", "target": "ghost"},
        {"source": "check", "source_port": "maybe", "target": "d"},
    ],
}

EXPECTED_ISSUES = {
    ("duplicate_node_id", "a", None, "nodes[3].id"),
    ("unknown_node_type", "mystery", None, "nodes[4].type"),
    ("invalid_params", "wait", None, "nodes[5].params.seconds"),
    ("dangling_edge", None, 2, "edges[2].target"),
    ("unknown_port", "check", 3, "edges[3].source_port"),
    ("cycle", "b", None, "nodes[1].id"),
    ("reference_not_upstream", "early", None, "nodes[6].params.template"),
}


def located(issues: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {(i["code"], i["node_id"], i["edge"], i["field"]) for i in issues}


async def test_validate_lists_every_problem_located_and_create_refuses(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/v1/workflows/validate", json=BROKEN)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["valid"] is False
    assert located(report["issues"]) == EXPECTED_ISSUES
    cycle = next(i for i in report["issues"] if i["code"] == "cycle")
    assert "b -> c -> b" in cycle["message"]
    assert "'teleport'" in next(
        i["message"] for i in report["issues"] if i["code"] == "unknown_node_type"
    )

    created = await client.post("/api/v1/workflows", json=BROKEN)
    assert created.status_code == 422, created.text
    error = created.json()["error"]
    assert error["code"] == "invalid_argument"
    assert located(error["details"]) == EXPECTED_ISSUES
    assert (await client.get("/api/v1/workflows")).json()["total"] == 0

    fine = await client.post("/api/v1/workflows/validate", json=DIVIDE)
    assert fine.json() == {"valid": True, "issues": []}
    # An update is validated the same way and leaves the workflow as it was.
    workflow_id = await create_workflow(client, DIVIDE)
    refused = await client.put(f"/api/v1/workflows/{workflow_id}", json=BROKEN)
    assert refused.status_code == 422, refused.text
    assert located(refused.json()["error"]["details"]) == EXPECTED_ISSUES
    assert (await client.get(f"/api/v1/workflows/{workflow_id}")).json()["version"] == 1


async def test_execute_refuses_inputs_that_break_the_declaration(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(client, DIVIDE)
    missing = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": {}})
    assert missing.status_code == 422, missing.text
    wrong = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": {"d": "zero"}}
    )
    assert wrong.status_code == 422, wrong.text
    assert (await list_executions(client, workflow_id=workflow_id))["total"] == 0


# ---------------------------------------------------------------------------- errors

UNKNOWN = "00000000-0000-4000-8000-000000000000"


async def test_unknown_ids_are_404_in_the_error_shape(client: httpx.AsyncClient) -> None:
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/api/v1/executions/{UNKNOWN}", None),
        ("GET", "/api/v1/executions/not-a-uuid", None),
        ("GET", f"/api/v1/executions/{UNKNOWN}/events", None),
        ("POST", f"/api/v1/executions/{UNKNOWN}/cancel", None),
        ("POST", f"/api/v1/executions/{UNKNOWN}/pause", None),
        ("POST", f"/api/v1/executions/{UNKNOWN}/retry", None),
        ("POST", f"/api/v1/executions/{UNKNOWN}/input", {"node_id": "x", "data": {}}),
        ("GET", f"/api/v1/workflows/{UNKNOWN}", None),
        ("PUT", f"/api/v1/workflows/{UNKNOWN}", DIVIDE),
        ("DELETE", f"/api/v1/workflows/{UNKNOWN}", None),
        ("POST", f"/api/v1/workflows/{UNKNOWN}/execute", {"inputs": {}}),
        ("GET", "/api/v1/no-such-route", None),
    ]
    for method, path, body in requests:
        response = await client.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        error = response.json()["error"]
        assert error["code"] == "not_found", (method, path, error)
        assert isinstance(error["message"], str) and error["message"]
        assert set(error) == {"code", "message", "details"}


async def test_malformed_json_is_a_400(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    broken = b'{"name": "x",\n "nodes": [}'
    response = await client.post("/api/v1/workflows", content=broken, headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json"
    assert (error["details"]["line"], error["details"]["column"]) == (2, 12)
    validate = await client.post("/api/v1/workflows/validate", content=broken, headers=headers)
    assert validate.status_code == 400, validate.text

    workflow_id = await create_workflow(client, DIVIDE)
    execute = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute", content=b'{"inputs": {', headers=headers
    )
    assert execute.status_code == 400, execute.text
    assert execute.json()["error"]["code"] == "invalid_json"

    not_an_object = await client.post("/api/v1/workflows", json=[1, 2])
    assert not_an_object.status_code == 422, not_an_object.text


async def test_node_types_lists_every_type_with_schemas(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/node-types")
    assert response.status_code == 200, response.text
    types = {t["type"]: t for t in response.json()["node_types"]}
    assert set(types) >= NODE_TYPES
    for name, spec in types.items():
        assert spec["params_schema"]["type"] == "object", name
        assert "output_schema" in spec, name
        assert spec["title"] and spec["category"], name
        assert isinstance(spec["output_ports"], list), name
    assert types["http_request"]["params_schema"]["required"] == ["url"]
    assert types["template"]["output_schema"]["properties"] == {"text": {"type": "string"}}
    assert set(types["condition"]["output_ports"]) >= {"true", "false"}
    assert types["merge"]["list_input_ports"] == ["in"]
    assert types["input"]["input_ports"] == []
    assert (
        "human_input" in types and "schema" in types["human_input"]["params_schema"]["properties"]
    )


async def test_webhook_trigger_starts_the_bound_workflows_once_per_key(client) -> None:
    bound = {
        "name": "on-order",
        "triggers": [{"type": "webhook", "name": "order-created"}],
        "nodes": [
            {"id": "start", "type": "input"},
            {"id": "done", "type": "output", "params": {"value": {"order": "{{ inputs.id }}"}}},
        ],
        "edges": [{"source": "start", "target": "done"}],
    }
    first = (await client.post("/api/v1/workflows", json=bound)).json()["id"]
    second = (await client.post("/api/v1/workflows", json={**bound, "name": "audit"})).json()["id"]
    unbound = {**bound, "name": "other", "triggers": []}
    assert (await client.post("/api/v1/workflows", json=unbound)).status_code == 201

    headers = {"Idempotency-Key": "order-42"}
    fired = await client.post("/api/v1/triggers/order-created", json={"id": 42}, headers=headers)
    assert fired.status_code == 202, fired.text
    execution_ids = fired.json()["execution_ids"]
    assert len(execution_ids) == 2
    again = await client.post("/api/v1/triggers/order-created", json={"id": 42}, headers=headers)
    assert sorted(again.json()["execution_ids"]) == sorted(execution_ids)
    started = set()
    for execution_id in execution_ids:
        execution = await wait_final(client, execution_id)
        assert execution["status"] == "succeeded"
        assert execution["outputs"] == {"order": 42}
        started.add(execution["workflow_id"])
    assert started == {first, second}
    missing = await client.post("/api/v1/triggers/nobody-listens", json={})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
