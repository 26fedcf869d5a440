"""The OpenAPI document says what the gateway does (issue #12 item 10): each drift that
schemathesis `--checks all` found has its own regression test here (the full fuzz run is
tests/security/test_api_fuzz.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from services.gateway.settings import GatewaySettings
from services.workflow.validation import validate_definition
from tests.gateway.conftest import HELLO, create_workflow, start_execution

#: The seven routes whose 405 said `Allow: GET` where POST (or PUT, DELETE) exists too.
SHARED_PATHS = [
    "/api/v1/workflows",
    "/api/v1/workflows/{id}",
    "/api/v1/workflows/{id}/grants",
    "/api/v1/schedules",
    "/api/v1/schedules/{id}",
    "/api/v1/api-keys",
    "/api/v1/secrets",
]
ID = "3f0c7d36-6c5e-4a59-9a55-1c8e7f5e2b10"


async def _document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def _parameter(document: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    for parameter in document["paths"][path][method]["parameters"]:
        if parameter["name"].lower() == name.lower():
            return dict(parameter)
    raise AssertionError(f"{method} {path} has no parameter {name}")


def _located(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [detail["loc"] for detail in response.json()["error"]["details"]]


async def test_page_size_declares_the_maximum_it_enforces(
    client: httpx.AsyncClient, settings: GatewaySettings
) -> None:
    document = await _document(client)
    listings = [
        (path, "get")
        for path, item in document["paths"].items()
        if "get" in item
        and any(p["name"] == "page_size" for p in item["get"].get("parameters", []))
    ]
    assert len(listings) >= 6, listings
    for path, method in listings:
        schema = _parameter(document, path, method, "page_size")["schema"]
        assert schema["type"] == "integer", (path, schema)
        assert schema["maximum"] == settings.max_page_size, (path, schema)
    too_big = await client.get(
        "/api/v1/workflows", params={"page_size": settings.max_page_size + 1}
    )
    assert _located(too_big) == ["query.page_size"]
    at_most = await client.get("/api/v1/workflows", params={"page_size": settings.max_page_size})
    assert at_most.status_code == 200, at_most.text


async def test_last_event_id_is_a_documented_integer(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    header = _parameter(
        document, "/api/v1/executions/{execution_id}/events", "get", "last-event-id"
    )
    assert header["in"] == "header"
    assert header["schema"]["type"] == "integer" and header["schema"]["minimum"] == 0
    execution_id = await start_execution(client)
    url = f"/api/v1/executions/{execution_id}/events"
    # "null" is what a string-typed header let a client send (and got a 422 for).
    assert _located(await client.get(url, headers={"Last-Event-ID": "null"})) == [
        "header.last-event-id"
    ]
    assert (await client.get(url, headers={"Last-Event-ID": "1"})).status_code == 200


async def test_query_parameters_are_never_documented_as_null(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                branches = schema.get("anyOf", [schema])
                assert all(branch.get("type") != "null" for branch in branches), (
                    method,
                    path,
                    parameter,
                )


async def test_the_definition_schema_is_what_the_workflow_service_accepts(
    client: httpx.AsyncClient,
) -> None:
    components = (await _document(client))["components"]["schemas"]
    definition = components["WorkflowDefinition"]
    assert definition["properties"]["name"]["minLength"] == 1
    assert definition["properties"]["description"] == {
        "default": "",
        "title": "Description",
        "type": "string",
    }
    assert definition["additionalProperties"] is False
    assert definition["properties"]["nodes"]["minItems"] == 1
    assert "nodes" in definition["required"]
    # And the service does refuse what the schema refuses.
    for broken, field in (
        ({**HELLO, "name": ""}, "name"),
        ({**HELLO, "description": None}, "description"),
        ({**HELLO, "colour": "red"}, "colour"),
        ({**HELLO, "nodes": []}, "nodes"),
        ({**HELLO, "inputs": {"name": {"type": "string", "required": 0}}}, "inputs.name.required"),
        ({**HELLO, "settings": {"max_concurrency": "3"}}, "settings.max_concurrency"),
    ):
        report = validate_definition(broken, {})
        assert not report.valid, broken
        assert field in [issue.field for issue in report.errors], (field, report.errors)
    # JSON Schema's integers include 2.0: so do the service's.
    retrying = {
        **HELLO,
        "nodes": [{"id": "start", "type": "input", "retry": {"max_attempts": 2.0}}],
    }
    assert not [
        issue
        for issue in validate_definition(retrying, {}).errors
        if "retry" in (issue.field or "")
    ]


async def test_validate_takes_any_object_and_reports_on_it(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    body = document["paths"]["/api/v1/workflows/validate"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["type"] == "object"
    response = await client.post("/api/v1/workflows/validate", json={"nodes": []})
    assert response.status_code == 200, response.text
    assert response.json()["valid"] is False
    assert _located(await client.post("/api/v1/workflows/validate", json=[1])) == ["body"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/api-keys", {"expires_in_days": True}, "body.expires_in_days"),
        ("/api/v1/api-keys", {"expires_in_days": "5"}, "body.expires_in_days"),
        ("/api/v1/workflows/{id}/execute", {"version": True}, "body.version"),
        ("/api/v1/workflows/{id}/execute", {"version": 2**31}, "body.version"),
        ("/api/v1/schedules", {"cron": "0 0 * * *", "misfire_limit": True}, "body.misfire_limit"),
        ("/api/v1/schedules", {"cron": "0 0 * * *", "enabled": 1}, "body.enabled"),
        ("/api/v1/schedules", {"cron": "0 0 * * *", "start_at": 0}, "body.start_at"),
    ],
)
async def test_json_types_are_taken_as_json_schema_reads_them(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    workflow_id = await create_workflow(client)
    if path == "/api/v1/schedules":
        body = {**body, "workflow_id": workflow_id}
    response = await client.post(path.replace("{id}", workflow_id), json=body)
    assert field in _located(response)


async def test_integral_floats_are_integers_as_in_json_schema(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    response = await client.post(
        f"/api/v1/workflows/{workflow_id}/execute", json={"version": 1.0, "inputs": {"name": "A"}}
    )
    assert response.status_code == 202, response.text


async def test_out_of_range_and_timestamp_query_values_are_refused(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(client)
    # Beyond the protobuf int32 it goes to: this was a 500.
    response = await client.get(f"/api/v1/workflows/{workflow_id}", params={"version": 2**40})
    assert _located(response) == ["query.version"]
    execution_id = await start_execution(client)
    response = await client.get(f"/api/v1/executions/{execution_id}/logs", params={"until": "0.5"})
    assert _located(response) == ["query.until"]
    response = await client.get(
        "/api/v1/schedules/preview", params={"cron": "0 0 * * *", "after": "1700000000"}
    )
    assert _located(response) == ["query.after"]


@pytest.mark.parametrize("path", SHARED_PATHS)
async def test_405_allows_every_documented_method(client: httpx.AsyncClient, path: str) -> None:
    document = await _document(client)
    template = next(
        candidate
        for candidate in document["paths"]
        if candidate.replace("{workflow_id}", "{id}").replace("{schedule_id}", "{id}") == path
    )
    documented = {method.upper() for method in document["paths"][template]}
    assert len(documented) >= 2, documented
    response = await client.options(path.replace("{id}", ID))
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert allowed == documented


async def test_405_on_a_path_that_a_template_also_matches_names_its_own_methods(
    client: httpx.AsyncClient,
) -> None:
    # /workflows/validate is also /workflows/{workflow_id} to the router: Allow names the
    # resource the document declares, POST only.
    response = await client.options("/api/v1/workflows/validate")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
