"""The claim check on the embedded stack: a 5 MB node output is stored once in the artifact
store and carried by reference (execution detail and events stay small); the downstream node
sees the value; the cache hits on the same content; a missing artifact fails the node with a
clear, retryable error naming the reference."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack
from libs.common.artifacts import is_ref
from tests.files.conftest import CLAIM_CHECK_BYTES
from tests.security.support import bearer, new_key

pytestmark = pytest.mark.asyncio(loop_scope="package")

BIG = 5_000_000
PIECE = 1_000_000  # the longest string an expression may make: five of them, 5 MB


def big_workflow(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "inputs": {"n": {"type": "integer", "default": PIECE}},
        "nodes": [
            {"id": "start", "type": "input"},
            {
                "id": "big",
                "type": "transform",
                "params": {"expression": "[" + ", ".join(["'x' * inputs.n"] * 5) + "]"},
                "cache": {"ttl_s": 600},
            },
            {
                "id": "measure",
                "type": "transform",
                "params": {
                    "expression": "{'length': big.value | map('length') | sum, "
                    "'head': big.value[0][:3]}"
                },
            },
        ],
        "edges": [
            {"source": "start", "target": "big"},
            {"source": "big", "target": "measure"},
        ],
    }


async def run(http: httpx.AsyncClient, workflow_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
    answer = await http.post(
        f"/api/v1/workflows/{workflow_id}/run", params={"wait": 60}, json={"inputs": inputs}
    )
    assert answer.status_code == 200, answer.text
    execution = await http.get(f"/api/v1/executions/{answer.json()['id']}")
    assert execution.status_code == 200, execution.text
    return dict(execution.json())


def node(execution: dict[str, Any], node_id: str) -> dict[str, Any]:
    found = [n for n in execution["nodes"] if n["node_id"] == node_id]
    assert found, execution
    return dict(found[0])


async def test_a_large_output_is_stored_once_and_referenced(
    running: tuple[Stack, Path], http: httpx.AsyncClient
) -> None:
    _, artifacts = running
    created = await http.post("/api/v1/workflows", json=big_workflow(f"big-{uuid.uuid4().hex}"))
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]
    first = await run(http, workflow_id, {})
    assert first["status"] == "succeeded", [n.get("error") for n in first["nodes"]]
    output = node(first, "big")["output"]
    ref = output["value"]
    assert is_ref(ref) and ref["content_type"] == "application/json"
    assert ref["size"] == 5 * (PIECE + 3) + 1  # ["xx...","xx...",...]
    assert node(first, "measure")["output"] == {"value": {"length": 5 * PIECE, "head": "xxx"}}
    stored = artifacts / ref["$ref"].removeprefix("artifact://")
    assert stored.stat().st_size == ref["size"]
    # The execution detail and the events stay small, and the event carries the reference.
    detail = await http.get(f"/api/v1/executions/{first['id']}")
    assert len(detail.content) < 64 * 1024
    events = await http.get(f"/api/v1/executions/{first['id']}/events", params={"format": "json"})
    body = events.text
    assert len(body) < 64 * 1024 and ref["$ref"] in body
    # The same content again: a cache hit (the cache key is a function of the content hash).
    first_measure = node(first, "measure")["output"]
    second = await run(http, workflow_id, {})
    assert node(second, "big")["status"] == "cached", second
    assert node(second, "big")["output"] == output
    assert node(second, "measure")["output"] == first_measure
    values = [p for p in stored.parent.iterdir() if p.is_file()]
    assert stored in values and len([p for p in values if p.name == stored.name]) == 1
    # A small output stays inline.
    small = await run(http, workflow_id, {"n": 10})
    assert node(small, "big")["output"] == {"value": ["x" * 10] * 5}
    assert CLAIM_CHECK_BYTES > 10


async def test_a_missing_artifact_fails_the_node_clearly_and_retryably(
    http: httpx.AsyncClient,
) -> None:
    gone = "artifact://values/default/" + "0" * 64
    definition = {
        "name": f"missing-{uuid.uuid4().hex}",
        "inputs": {"data": {"type": "object"}},
        "nodes": [
            {"id": "start", "type": "input"},
            {
                "id": "use",
                "type": "transform",
                "params": {"expression": "inputs.data"},
                "retry": {"max_attempts": 2, "initial_delay_s": 0.01},
            },
        ],
        "edges": [{"source": "start", "target": "use"}],
    }
    created = await http.post("/api/v1/workflows", json=definition)
    assert created.status_code == 201, created.text
    ref = {"$ref": gone, "size": 3, "sha256": "0" * 64, "content_type": "application/json"}
    execution = await run(http, created.json()["id"], {"data": {**ref, "inline": "json"}})
    assert execution["status"] == "failed", execution
    used = node(execution, "use")
    assert used["error"]["type"] == "ArtifactMissing", used
    assert used["error"]["retryable"] is True
    assert gone in used["error"]["message"]
    assert used["attempts"] == 2  # retried: a store outage may pass


async def test_file_inputs_take_a_file_id_of_the_tenant(
    running: tuple[Stack, Path], http: httpx.AsyncClient
) -> None:
    stack, _ = running
    definition = {
        "name": f"file-input-{uuid.uuid4().hex}",
        "inputs": {"doc": {"type": "file"}},
        "nodes": [
            {"id": "start", "type": "input"},
            {
                "id": "describe",
                "type": "transform",
                "params": {"expression": "{'name': inputs.doc.name, 'size': inputs.doc.size}"},
            },
        ],
        "edges": [{"source": "start", "target": "describe"}],
    }
    created = await http.post("/api/v1/workflows", json=definition)
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]
    uploaded = await http.post("/api/v1/files", params={"name": "doc.txt"}, content=b"hello")
    file_id = uploaded.json()["id"]
    execution = await run(http, workflow_id, {"doc": file_id})
    assert node(execution, "describe")["output"] == {"value": {"name": "doc.txt", "size": 5}}
    # Another tenant's file, or none: a located 422, no execution.
    token, _ = await new_key(stack, tenant="elsewhere", scopes=("read", "write"))
    theirs = await http.post("/api/v1/files", content=b"theirs", headers=bearer(token))
    for wrong in (theirs.json()["id"], str(uuid.uuid4())):
        refused = await http.post(
            f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": {"doc": wrong}}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"][0]["field"] == "inputs.doc"
    not_an_id = await http.post(
        f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": {"doc": "report.pdf"}}
    )
    assert not_an_id.status_code == 422 and "file id" in not_an_id.text


async def test_the_http_node_uploads_a_referenced_file_streamed(
    running: tuple[Stack, Path], http: httpx.AsyncClient
) -> None:
    stack, _ = running
    data = b"0123456789" * 100_000  # 1 MB: by reference, streamed from the store
    uploaded = (await http.post("/api/v1/files", params={"name": "a.bin"}, content=data)).json()
    definition = {
        "name": f"http-stream-{uuid.uuid4().hex}",
        "inputs": {"doc": {"type": "file"}, "key": {"type": "string"}},
        "nodes": [
            {"id": "start", "type": "input"},
            {
                "id": "send",  # to the files API itself: the copy's SHA-256 proves the bytes
                "type": "http_request",
                "params": {
                    "method": "POST",
                    "url": f"{stack.gateway_url}/api/v1/files?name=copy.bin",
                    "headers": {"Authorization": "Bearer {{ inputs.key }}"},
                    "body": "{{ inputs.doc }}",
                },
            },
        ],
        "edges": [{"source": "start", "target": "send"}],
    }
    created = await http.post("/api/v1/workflows", json=definition)
    assert created.status_code == 201, created.text
    execution = await run(
        http, created.json()["id"], {"doc": uploaded["id"], "key": stack.admin_key}
    )
    sent = node(execution, "send")
    assert sent["status"] == "succeeded", sent
    copy = sent["output"]["json"]
    assert copy["size"] == len(data) and copy["sha256"] == uploaded["sha256"]
