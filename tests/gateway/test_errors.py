"""The error layer: every failure answers `{"error": {code, message, details}}` with the
contract's status."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from libs.common.errors import DeadlineExceeded, FailedPrecondition
from services.gateway.app import create_app
from services.gateway.clients import ServiceClients
from services.gateway.settings import GatewaySettings
from tests.gateway.conftest import HELLO, Fakes, create_workflow, start_execution, unused_address


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return dict(body["error"])


async def test_malformed_json_is_400_with_its_position(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    response = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute",
        content=b'{\n  "inputs": {"name": "Ada",}\n}',
        headers={"content-type": "application/json"},
    )
    error = error_of(response, 400, "invalid_json")
    assert error["details"]["line"] == 2
    assert error["details"]["column"] == 28
    assert "line 2 column 28" in error["message"]


async def test_malformed_definition_json_is_400_with_its_position(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/v1/workflows",
        content=b'{"name": "x",\n "nodes": [}',
        headers={"content-type": "application/json"},
    )
    error = error_of(response, 400, "invalid_json")
    assert (error["details"]["line"], error["details"]["column"]) == (2, 12)


async def test_invalid_fields_are_422_each_located(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    response = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute",
        json={"inputs": 5, "idempotency_key": 7, "surprise": True},
    )
    error = error_of(response, 422, "invalid_request")
    locations = {detail["loc"] for detail in error["details"]}
    assert locations == {"body.inputs", "body.idempotency_key", "body.surprise"}
    assert all(detail["msg"] for detail in error["details"])


async def test_missing_field_is_422(client: httpx.AsyncClient) -> None:
    execution_id = await start_execution(client)
    response = await client.post(f"/api/v1/executions/{execution_id}/input", json={"data": {}})
    error = error_of(response, 422, "invalid_request")
    assert [d["loc"] for d in error["details"]] == ["body.node_id"]


async def test_definition_that_is_not_an_object_is_422(client: httpx.AsyncClient) -> None:
    error = error_of(await client.post("/api/v1/workflows", json=[1, 2]), 422, "invalid_request")
    assert error["details"][0]["loc"] == "body"
    error_of(await client.post("/api/v1/workflows", content=b""), 422, "invalid_request")


@pytest.mark.parametrize(
    "query", ["page=0", "page_size=0", "page_size=201", "page=x", "status=bogus"]
)
async def test_pagination_and_filters_out_of_bounds_are_422(
    client: httpx.AsyncClient, query: str
) -> None:
    error = error_of(await client.get(f"/api/v1/executions?{query}"), 422, "invalid_request")
    assert error["details"][0]["loc"].startswith("query.")


async def test_page_size_bound_applies_to_logs(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/api/v1/executions/{uuid.uuid4()}/logs?page_size=5000")
    assert error_of(response, 422, "invalid_request")["details"][0]["loc"] == "query.page_size"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/workflows/{id}",
        "/api/v1/executions/{id}",
        "/api/v1/executions/{id}/events",
        "/api/v1/schedules/{id}",
    ],
)
@pytest.mark.parametrize("make_id", [lambda: str(uuid.uuid4()), lambda: "not-a-uuid"])
async def test_unknown_ids_are_404(client: httpx.AsyncClient, path: str, make_id: Any) -> None:
    error_of(await client.get(path.format(id=make_id())), 404, "not_found")


async def test_unknown_id_on_post_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/api/v1/executions/{uuid.uuid4()}/cancel")
    error_of(response, 404, "not_found")
    response = await client.post(f"/api/v1/workflows/{uuid.uuid4()}/execute", json={})
    error_of(response, 404, "not_found")


async def test_unknown_route_and_wrong_method(client: httpx.AsyncClient) -> None:
    error_of(await client.get("/api/v1/nope"), 404, "not_found")
    response = await client.patch("/api/v1/workflows")
    error_of(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_body_over_the_limit_is_413_by_content_length(client: httpx.AsyncClient) -> None:
    big = {"name": "big", "nodes": [], "pad": "x" * 70_000}
    error = error_of(await client.post("/api/v1/workflows", json=big), 413, "payload_too_large")
    assert error["details"] == {"max_bytes": 64 * 1024}


async def test_body_over_the_limit_is_413_when_streamed(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):  # no Content-Length: counted as it arrives
            yield b"x" * 1024

    response = await client.post("/api/v1/workflows", content=chunks())
    error_of(response, 413, "payload_too_large")


async def test_service_validation_report_is_422_with_details(client: httpx.AsyncClient) -> None:
    definition = {**HELLO, "nodes": [{"id": "a", "type": "teleport"}], "edges": []}
    error = error_of(
        await client.post("/api/v1/workflows", json=definition), 422, "invalid_argument"
    )
    assert error["details"] == {"issues": [{"code": "unknown_node_type", "node_id": "a"}]}


async def test_failed_precondition_is_409(client: httpx.AsyncClient) -> None:
    execution_id = await start_execution(client)  # already succeeded
    response = await client.post(f"/api/v1/executions/{execution_id}/pause")
    error_of(response, 409, "failed_precondition")


async def test_errors_raised_by_the_service_keep_code_and_details(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.workflow.fail_next = FailedPrecondition("busy", {"retry_after_s": 3})
    error = error_of(await client.get("/api/v1/workflows"), 409, "failed_precondition")
    assert error == {
        "code": "failed_precondition",
        "message": "busy",
        "details": {"retry_after_s": 3},
    }
    # (UNAVAILABLE is retried by the channel, so a one-off one would not show.)
    fakes.workflow.fail_next = DeadlineExceeded("too slow")
    error_of(await client.get("/api/v1/workflows"), 504, "deadline_exceeded")


async def test_dependency_down_is_503(settings: GatewaySettings) -> None:
    down = settings.model_copy(
        update={"workflow_address": unused_address(), "grpc_deadline_s": 2.0}
    )
    clients = ServiceClients.connect(down)
    try:
        transport = httpx.ASGITransport(app=create_app(down, clients))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            error_of(await http.get("/api/v1/workflows"), 503, "unavailable")
    finally:
        await clients.close()


async def test_log_service_down_webhook_routes_are_503_with_retry_after(
    settings: GatewaySettings,
) -> None:
    # The log service owns the subscriptions: nothing is half-written when it is away.
    down = settings.model_copy(
        update={
            "log_address": unused_address(),
            "grpc_deadline_s": 2.0,
            "http_allow_hosts": ["127.0.0.1"],
        }
    )
    clients = ServiceClients.connect(down)
    try:
        transport = httpx.ASGITransport(app=create_app(down, clients))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            created = await http.post(
                "/api/v1/webhooks",
                json={"url": "http://127.0.0.1:9/hook", "events": ["execution.failed"]},
            )
            error_of(created, 503, "unavailable")
            assert created.headers["retry-after"]
            listed = await http.get("/api/v1/webhooks")
            error_of(listed, 503, "unavailable")
            assert listed.headers["retry-after"]
    finally:
        await clients.close()


async def test_unexpected_error_is_a_logged_500(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(tool: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr("services.gateway.routes.catalog.tool_out", broken)
    with caplog.at_level(logging.ERROR):
        response = await client.get("/api/v1/tools", headers={"x-request-id": "req-1"})
    error_of(response, 500, "internal")
    assert "bug" not in response.text
    assert response.headers["x-request-id"] == "req-1"
    assert any("unhandled error" in r.getMessage() for r in caplog.records)


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = (await client.get("/healthz")).headers["x-request-id"]
    assert len(generated) == 32
    bad = await client.get("/healthz", headers={"x-request-id": "a b\tc"})
    assert bad.headers["x-request-id"] != "a b\tc"
    response = await client.get("/api/v1/nope", headers={"x-request-id": "r2"})
    assert response.headers["x-request-id"] == "r2"


async def test_bad_last_event_id_is_422(client: httpx.AsyncClient) -> None:
    execution_id = await start_execution(client)
    response = await client.get(
        f"/api/v1/executions/{execution_id}/events", headers={"last-event-id": "abc"}
    )
    assert error_of(response, 422, "invalid_request")["details"][0]["loc"] == "header.last-event-id"
