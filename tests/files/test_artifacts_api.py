"""Artifacts of node outputs through the gateway: the bytes of a reference for its tenant
(streamed, with Range), and signed download URLs that need no credential, expire, cannot be
altered and never reach another tenant's artifacts."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import types
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack
from libs.common.artifacts import is_ref
from services.gateway.routes.artifacts import sign_download
from tests.files.conftest import CLAIM_CHECK_BYTES
from tests.security.support import bearer, new_key

pytestmark = pytest.mark.asyncio(loop_scope="package")

SIZE = CLAIM_CHECK_BYTES * 2


async def _large_output(http: httpx.AsyncClient) -> dict[str, Any]:
    """The reference of a node output over the claim-check threshold (a text value)."""
    definition = {
        "name": f"artifact-{uuid.uuid4().hex}",
        "nodes": [
            {"id": "start", "type": "input"},
            {"id": "big", "type": "transform", "params": {"expression": f"'ab' * {SIZE // 2}"}},
        ],
        "edges": [{"source": "start", "target": "big"}],
    }
    created = await http.post("/api/v1/workflows", json=definition)
    assert created.status_code == 201, created.text
    answer = await http.post(
        f"/api/v1/workflows/{created.json()['id']}/run", params={"wait": 60}, json={}
    )
    assert answer.status_code == 200, answer.text
    execution = (await http.get(f"/api/v1/executions/{answer.json()['id']}")).json()
    ref = next(n for n in execution["nodes"] if n["node_id"] == "big")["output"]["value"]
    assert is_ref(ref), ref
    return dict(ref)


async def test_the_bytes_of_a_node_output_for_its_tenant(
    running: tuple[Stack, Path], http: httpx.AsyncClient
) -> None:
    stack, _ = running
    ref = await _large_output(http)
    query = {"ref": ref["$ref"], "content_type": ref["content_type"]}
    whole = await http.get("/api/v1/artifacts/content", params=query)
    assert whole.status_code == 200, whole.text
    assert whole.content == b"ab" * (SIZE // 2)
    assert hashlib.sha256(whole.content).hexdigest() == ref["sha256"]
    assert whole.headers["content-type"].startswith("text/plain")
    assert whole.headers["etag"] == f'"{ref["sha256"]}"'
    assert whole.headers["content-disposition"].startswith("attachment")
    # A preview reads the first bytes only.
    head = await http.get("/api/v1/artifacts/content", params=query, headers={"Range": "bytes=0-9"})
    assert head.status_code == 206 and head.content == b"ababababab"
    assert head.headers["content-range"] == f"bytes 0-9/{SIZE}"
    # Another tenant sees nothing of it; an unknown key of the tenant is a 404 too.
    other, _ = await new_key(stack, tenant=f"other-{uuid.uuid4().hex[:8]}")
    foreign = await http.get("/api/v1/artifacts/content", params=query, headers=bearer(other))
    assert foreign.status_code == 404, foreign.text
    signed = await http.post(
        "/api/v1/artifacts/download-url", json={"ref": ref["$ref"]}, headers=bearer(other)
    )
    assert signed.status_code == 404, signed.text
    unknown = "artifact://values/default/" + "0" * 64
    assert (await http.get("/api/v1/artifacts/content", params={"ref": unknown})).status_code == 404
    # A key outside the tenant's kinds, or a malformed ref, is refused before the store.
    for bad in ("artifact://values/../x", "artifact://other/default/x", "http://x"):
        answer = await http.get("/api/v1/artifacts/content", params={"ref": bad})
        assert answer.status_code in (404, 422), (bad, answer.text)


async def test_a_signed_download_url_needs_no_credential_and_expires(
    running: tuple[Stack, Path], http: httpx.AsyncClient
) -> None:
    stack, _ = running
    ref = await _large_output(http)
    signed = await http.post(
        "/api/v1/artifacts/download-url",
        json={"ref": ref["$ref"], "content_type": ref["content_type"], "name": "big.txt"},
    )
    assert signed.status_code == 200, signed.text
    url = signed.json()["url"]
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as anonymous:
        download = await anonymous.get(url)
        assert download.status_code == 200, download.text
        assert hashlib.sha256(download.content).hexdigest() == ref["sha256"]
        assert "big.txt" in download.headers["content-disposition"]
        ranged = await anonymous.get(url, headers={"Range": "bytes=-4"})
        assert ranged.status_code == 206 and ranged.content == b"abab"
        # An altered token (another key in its claims, the old signature) is refused.
        payload, _, signature = url.rsplit("/", 1)[-1].partition(".")
        forged = await anonymous.get(f"/api/v1/artifacts/download/{payload[:-2]}AA.{signature}")
        assert forged.status_code == 403, forged.text
        assert "not valid" in forged.json()["error"]["message"]
        # A token signed here but past its expiry is refused, naming why.
        app = stack.services["gateway"].app
        claims = {"k": ref["$ref"].removeprefix("artifact://"), "t": "", "c": "text/plain"}
        expired = sign_download(
            types.SimpleNamespace(app=app),  # type: ignore[arg-type]
            {**claims, "n": "x", "exp": time.time() - 1},
        )
        late = await anonymous.get(f"/api/v1/artifacts/download/{expired}")
        assert late.status_code == 403 and "expired" in late.json()["error"]["message"]
        # A token for another tenant's key (signed here) never reaches it.
        crossed = sign_download(
            types.SimpleNamespace(app=app),  # type: ignore[arg-type]
            {**claims, "t": "someone-else", "n": "x", "exp": time.time() + 60},
        )
        assert (await anonymous.get(f"/api/v1/artifacts/download/{crossed}")).status_code == 404
    # Valid for HEDDLE_DOWNLOAD_URL_TTL_S (300 s by default).
    expires_at = dt.datetime.fromisoformat(signed.json()["expires_at"].replace("Z", "+00:00"))
    left = (expires_at - dt.datetime.now(dt.UTC)).total_seconds()
    assert 240 < left <= 300, left


async def test_a_large_input_keeps_its_declared_type(http: httpx.AsyncClient) -> None:
    """An input over the claim-check threshold travels by reference and still matches its
    declared type (a string stays a string, an object an object); a wrong type is a 422."""
    definition = {
        "name": f"large-input-{uuid.uuid4().hex}",
        "inputs": {"text": {"type": "string"}, "data": {"type": "object"}},
        "nodes": [
            {"id": "start", "type": "input"},
            {
                "id": "size",
                "type": "transform",
                "params": {"expression": "[inputs.text | length, inputs.data.k | length]"},
            },
        ],
        "edges": [{"source": "start", "target": "size"}],
    }
    created = await http.post("/api/v1/workflows", json=definition)
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]
    inputs = {"text": "t" * SIZE, "data": {"k": "v" * SIZE}}
    answer = await http.post(
        f"/api/v1/workflows/{workflow_id}/run", params={"wait": 60}, json={"inputs": inputs}
    )
    assert answer.status_code == 200, answer.text
    execution = (await http.get(f"/api/v1/executions/{answer.json()['id']}")).json()
    assert is_ref(execution["inputs"]["text"]) and is_ref(execution["inputs"]["data"])
    size = next(n for n in execution["nodes"] if n["node_id"] == "size")
    assert size["output"] == {"value": [SIZE, SIZE]}, size
    swapped = {"text": inputs["data"], "data": inputs["text"]}
    refused = await http.post(f"/api/v1/workflows/{workflow_id}/execute", json={"inputs": swapped})
    assert refused.status_code == 422, refused.text
    fields = {d["field"] for d in refused.json()["error"]["details"]}
    assert fields == {"inputs.text", "inputs.data"}
