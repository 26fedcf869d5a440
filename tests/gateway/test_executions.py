"""Execution, log, schedule, catalog, trigger and health routes."""

from __future__ import annotations

import httpx

from services.gateway.app import create_app
from services.gateway.clients import ServiceClients
from services.gateway.settings import GatewaySettings
from tests.gateway.conftest import HELLO, Fakes, create_workflow, start_execution, unused_address
from tests.helpers import assert_eventually


async def test_execution_detail_has_every_node(client: httpx.AsyncClient) -> None:
    execution_id = await start_execution(client, {"name": "Ada"})
    execution = (await client.get(f"/api/v1/executions/{execution_id}")).json()
    assert execution["status"] == "succeeded"
    assert execution["inputs"] == {"name": "Ada"}
    assert execution["outputs"] == {"name": "Ada"}
    assert execution["error"] is None
    assert execution["started_at"] == "2025-01-02T03:04:05Z"
    assert execution["last_seq"] == 6
    assert [node["node_id"] for node in execution["nodes"]] == ["start", "greet"]
    node = execution["nodes"][1]
    assert node == {
        "node_id": "greet",
        "type": "template",
        "status": "succeeded",
        "attempts": 1,
        "output": {"text": "hi"},
        "error": None,
        "started_at": "2025-01-02T03:04:05Z",
        "finished_at": "2025-01-02T03:04:05.012000Z",
        "duration_ms": 12.0,
        "attempt_history": [
            {
                "attempt": 1,
                "status": "succeeded",
                "started_at": "2025-01-02T03:04:05Z",
                "finished_at": None,
                "error": None,
            }
        ],
        "waiting": None,
        "inputs": None,
        "checkpoint": None,
        "children": [],
        "iterations": None,
        "iterations_total": None,
    }


async def test_list_executions_filters(client: httpx.AsyncClient, fakes: Fakes) -> None:
    execution_id = await start_execution(client)
    workflow_id = fakes.workflow.executions[execution_id].workflow_id
    listing = (
        await client.get(f"/api/v1/executions?workflow_id={workflow_id}&status=succeeded")
    ).json()
    assert [item["id"] for item in listing["items"]] == [execution_id]
    assert listing["items"][0]["nodes"] == []
    none = (await client.get("/api/v1/executions?status=failed")).json()
    assert none["items"] == [] and none["total"] == 0


async def test_control_input_and_retry(client: httpx.AsyncClient, fakes: Fakes) -> None:
    fakes.workflow.auto_complete = False
    execution_id = await start_execution(client)
    paused = await client.post(f"/api/v1/executions/{execution_id}/pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    resumed = await client.post(f"/api/v1/executions/{execution_id}/resume")
    assert resumed.json()["status"] == "running"

    waiting = await client.post(
        f"/api/v1/executions/{execution_id}/input", json={"node_id": "ask", "data": {"ok": True}}
    )
    assert waiting.status_code == 409  # the fake has no waiting node

    cancelled = await client.post(f"/api/v1/executions/{execution_id}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert (await client.post(f"/api/v1/executions/{execution_id}/retry")).status_code == 409

    await fakes.workflow.finish(execution_id, "failed")
    retried = await client.post(f"/api/v1/executions/{execution_id}/retry")
    assert retried.status_code == 202
    new_id = retried.json()["execution_id"]
    assert (await client.get(f"/api/v1/executions/{new_id}")).json()["retry_of"] == execution_id


async def test_logs_filters_and_pages(client: httpx.AsyncClient) -> None:
    url = f"/api/v1/executions/{await start_execution(client)}/logs"
    first = (await client.get(url, params={"page_size": 2, "level": "info"})).json()
    assert [r["node_id"] for r in first["records"]] == ["a", "b"]
    assert first["records"][0]["fields"] == {"n": 1}
    second = (
        await client.get(url, params={"page_size": 2, "page_token": first["next_page_token"]})
    ).json()
    assert [r["node_id"] for r in second["records"]] == ["c"]
    assert second["next_page_token"] is None
    only_b = (await client.get(url, params={"node_id": "b"})).json()
    assert [r["message"] for r in only_b["records"]] == ["hello from b"]
    assert (await client.get(url, params={"level": "loud"})).status_code == 422


async def test_schedules(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    spec = {"workflow_id": workflow_id, "cron": "*/5 * * * *", "timezone": "Europe/Paris"}
    created = await client.post("/api/v1/schedules", json=spec)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert (schedule["cron"], schedule["timezone"], schedule["misfire_policy"]) == (
        "*/5 * * * *",
        "Europe/Paris",
        "skip",
    )
    schedule_id = schedule["id"]
    updated = await client.put(
        f"/api/v1/schedules/{schedule_id}", json={**spec, "enabled": False, "inputs": {"a": 1}}
    )
    assert updated.json()["enabled"] is False and updated.json()["inputs"] == {"a": 1}
    assert (await client.get(f"/api/v1/schedules/{schedule_id}")).json()["id"] == schedule_id
    listing = (await client.get("/api/v1/schedules")).json()
    assert listing["total"] == 1
    fired = await client.post(f"/api/v1/schedules/{schedule_id}/trigger")
    assert fired.status_code == 202 and fired.json()["dedupe_key"]
    assert (await client.delete(f"/api/v1/schedules/{schedule_id}")).status_code == 204
    assert (await client.get(f"/api/v1/schedules/{schedule_id}")).status_code == 404

    bad = await client.post("/api/v1/schedules", json={**spec, "cron": "nope"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_argument"
    missing = await client.post("/api/v1/schedules", json={"misfire_policy": "sometimes"})
    locations = {d["loc"] for d in missing.json()["error"]["details"]}
    assert locations == {"body.workflow_id", "body.cron", "body.misfire_policy"}


async def test_schedule_preview(client: httpx.AsyncClient) -> None:
    preview = await client.get(
        "/api/v1/schedules/preview", params={"cron": "* * * * *", "count": 3}
    )
    assert preview.status_code == 200
    assert preview.json()["fire_times"] == [
        "2025-01-01T00:00:00Z",
        "2025-01-01T00:01:00Z",
        "2025-01-01T00:02:00Z",
    ]
    assert (await client.get("/api/v1/schedules/preview")).status_code == 422
    too_many = await client.get(
        "/api/v1/schedules/preview", params={"cron": "* * * * *", "count": 1000}
    )
    assert too_many.status_code == 422


async def test_tools_and_models(client: httpx.AsyncClient) -> None:
    tools = (await client.get("/api/v1/tools")).json()["tools"]
    assert tools == [
        {
            "name": "http_request",
            "description": "HTTP call",
            "source": "builtin",
            "input_schema": {"type": "object"},
            "output_schema": None,
        }
    ]
    models = (await client.get("/api/v1/ai/models")).json()["models"]
    assert models[0]["name"] == "echo" and models[0]["healthy"] is True


async def test_webhook_trigger(client: httpx.AsyncClient, fakes: Fakes) -> None:
    await create_workflow(client, {**HELLO, "webhook": "deploy"})
    fired = await client.post(
        "/api/v1/triggers/deploy", json={"name": "Ada"}, headers={"Idempotency-Key": "d-1"}
    )
    assert fired.status_code == 202
    (execution_id,) = fired.json()["execution_ids"]
    fire = fakes.workflow.requests[-1].fire
    assert (fire.source, fire.dedupe_key) == ("webhook:deploy", "webhook:deploy:d-1")
    execution = (await client.get(f"/api/v1/executions/{execution_id}")).json()
    assert execution["inputs"] == {"name": "Ada"}

    empty = await client.post("/api/v1/triggers/deploy")
    assert empty.status_code == 202
    assert fakes.workflow.requests[-1].fire.dedupe_key.startswith("webhook:deploy:")
    assert (await client.post("/api/v1/triggers/deploy", json=[1])).status_code == 422
    assert (await client.post("/api/v1/triggers/bad%20name", json={})).status_code == 422


async def test_health_ready_and_metrics(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}

    async def ready() -> bool:
        # 503 while the gateway's fresh database migrates (on first use; each check has 1 s)
        return (await client.get("/readyz")).status_code == 200

    await assert_eventually(ready, timeout=30, interval=0.1, message="/readyz never said ready")
    body = (await client.get("/readyz")).json()
    assert body["status"] == "ready"
    services = {"workflow", "node", "ai", "tool", "scheduler", "log"}
    assert set(body["dependencies"]) == services | {"database"}  # redis: memory:// here
    assert body["dependencies"]["database"] == {"status": "up", "required": True}
    assert body["dependencies"]["node"] == {"status": "up", "required": True}

    await client.get("/api/v1/workflows/not-a-uuid")
    metrics = (await client.get("/metrics")).text
    assert (
        'heddle_http_requests_total{method="GET",route="/api/v1/workflows/{workflow_id}",'
        'status="404"}' in metrics
    )
    assert "heddle_http_request_duration_seconds_bucket" in metrics


async def test_readiness_503_only_when_a_required_dependency_is_down(
    settings: GatewaySettings,
) -> None:
    for required, expected in ((["workflow", "log"], 503), (["workflow"], 200)):
        partial = settings.model_copy(
            update={"log_address": unused_address(), "ready_required": required}
        )
        clients = ServiceClients.connect(partial)
        app = create_app(partial, clients)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                response = await http.get("/readyz")
        finally:
            await app.state.security.close()
            await clients.close()
        assert response.status_code == expected
        assert response.json()["dependencies"]["log"]["status"] == "down"
        assert response.json()["dependencies"]["workflow"]["status"] == "up"
