"""/docs works without internet (issue #16 item 2): Swagger UI comes from the gateway itself,
and the document it shows is readable: camelCase operation ids, examples on the main request
bodies, the event stream and the WebSocket described."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import httpx
from jsonschema import Draft202012Validator

CAMEL_CASE = re.compile(r"^[a-z][a-zA-Z0-9]*$")


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if found.get(name):
                self.urls.append((tag, str(found[name])))


async def test_docs_loads_only_same_origin_assets_and_they_are_served(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    parser = _Assets()
    parser.feed(page.text)
    scripts = [url for tag, url in parser.urls if tag == "script"]
    styles = [url for tag, url in parser.urls if tag == "link"]
    assert len(scripts) >= 2 and styles, parser.urls
    assert "<script>" not in page.text  # no inline script: the CSP allows none
    for _, url in parser.urls:
        # Same origin: an absolute path, not `//cdn...` nor `https://...`.
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
    for url in scripts:
        content_type = (await client.get(url)).headers["content-type"]
        assert "javascript" in content_type, (url, content_type)
    for url in styles:
        if url.endswith(".css"):
            assert (await client.get(url)).headers["content-type"].startswith("text/css")
    bundle = next(url for url in scripts if "swagger-ui-bundle" in url)
    assert "SwaggerUIBundle" in (await client.get(bundle)).text
    initializer = next(url for url in scripts if url != bundle)
    assert '"/openapi.json"' in (await client.get(initializer)).text
    # ReDoc's page would load its script from a CDN: it is not served.
    assert (await client.get("/redoc")).status_code == 404


async def _document(client: httpx.AsyncClient) -> dict[str, Any]:
    return dict((await client.get("/openapi.json")).json())


async def test_operation_ids_are_camel_case_and_unique(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    ids = [
        operation["operationId"]
        for item in document["paths"].values()
        for operation in item.values()
    ]
    assert len(ids) == len(set(ids)), sorted(ids)
    assert [i for i in ids if not CAMEL_CASE.fullmatch(i)] == []
    for expected in (
        "createWorkflow",
        "executeWorkflow",
        "listExecutions",
        "getExecution",
        "cancelExecution",
        "streamEvents",
        "createSchedule",
        "createApiKey",
    ):
        assert expected in ids, expected


def _operation(document: dict[str, Any], operation_id: str) -> dict[str, Any]:
    for item in document["paths"].values():
        for operation in item.values():
            if operation["operationId"] == operation_id:
                return dict(operation)
    raise AssertionError(operation_id)


def _examples(document: dict[str, Any], operation_id: str) -> list[tuple[Any, dict[str, Any]]]:
    """(example, schema) pairs of an operation's JSON request body."""
    media = _operation(document, operation_id)["requestBody"]["content"]["application/json"]
    schema = media["schema"]
    found = [example["value"] for example in media.get("examples", {}).values()]
    # The model's own examples (an optional body is `anyOf: [{$ref}, null]`).
    for branch in [schema, *schema.get("anyOf", [])]:
        if "$ref" in branch:
            target = document["components"]["schemas"][branch["$ref"].rsplit("/", 1)[1]]
            found += target.get("examples", [])
    return [(example, schema) for example in found]


async def test_the_main_request_bodies_carry_valid_examples(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    for operation_id in (
        "createWorkflow",
        "updateWorkflow",
        "validateWorkflow",
        "executeWorkflow",
        "createSchedule",
        "createApiKey",
    ):
        examples = _examples(document, operation_id)
        assert examples, operation_id
        for example, schema in examples:
            # Each example is valid against the schema it illustrates.
            validator = Draft202012Validator({**schema, "components": document["components"]})
            errors = [error.message for error in validator.iter_errors(example)]
            assert errors == [], (operation_id, example, errors)
    yaml_body = _operation(document, "createWorkflow")["requestBody"]["content"]["application/yaml"]
    assert "nodes:" in next(iter(yaml_body["examples"].values()))["value"]


async def test_the_event_stream_and_the_websocket_are_documented(
    client: httpx.AsyncClient,
) -> None:
    document = await _document(client)
    sse = _operation(document, "streamEvents")
    assert "text/event-stream" in sse["responses"]["200"]["content"]
    for fact in ("id: ", "event: ", "data: ", "Last-Event-ID", ": ping", "event: error"):
        assert fact in sse["description"], fact
    description = document["info"]["description"]
    for fact in ("/ws/v1/executions/{execution_id}", "Upgrade: websocket", "4404", "?after="):
        assert fact in description, fact


async def test_links_lead_from_created_objects_to_their_operations(
    client: httpx.AsyncClient,
) -> None:
    document = await _document(client)
    operations = {
        operation["operationId"]: operation
        for item in document["paths"].values()
        for operation in item.values()
    }
    created = operations["createWorkflow"]["responses"]["201"]["links"]
    assert {"GetWorkflow", "ExecuteWorkflow"} <= set(created)
    started = operations["executeWorkflow"]["responses"]["202"]["links"]
    assert started["StreamEvents"]["parameters"] == {"execution_id": "$response.body#/execution_id"}
    for operation in operations.values():
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                target = operations[link["operationId"]]
                names = {parameter["name"] for parameter in target.get("parameters", [])}
                assert set(link["parameters"]) <= names, link
