"""A large file through the gateway and a 3-node workflow (the file input, a transform that
streams, a write that streams), at a test size: the process (the embedded stack: gateway,
workflow service and node replica together) grows by far less than the file. bench/files.py
runs the 200 MB case, per process, on the embedded stack and the production topology."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack
from tests.files.test_claim_check import node
from tests.security.support import bearer, new_key

pytestmark = pytest.mark.asyncio(loop_scope="package")

SIZE = 64 * 1024 * 1024
#: Streamed, the growth does not follow the file's size (~9.5 MB alone, allocator and first
#: use); one buffered copy of the file is 64 MB or more. The RSS is the whole test process's:
#: in a suite's worker, what earlier tests left running in the package's stack counts too
#: (19.3 MB was seen at 40 MB). bench/files.py measures the acceptance's 200 MB per process.
BOUND = 28 * 1024 * 1024
CHUNK = b"abcdefghij" * 6554  # ~64 KB


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def body(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        piece = CHUNK[: size - sent]
        sent += len(piece)
        yield piece


def expected_digest(size: int, upper: bool) -> str:
    digest = hashlib.sha256()
    sent = 0
    while sent < size:
        piece = CHUNK[: size - sent]
        sent += len(piece)
        digest.update(piece.upper() if upper else piece)
    return digest.hexdigest()


async def test_a_large_file_streams_through_gateway_and_nodes(
    running: tuple[Stack, Path], http: httpx.AsyncClient
) -> None:
    definition = {
        "name": f"large-{uuid.uuid4().hex}",
        "inputs": {"doc": {"type": "file"}},
        "nodes": [
            {"id": "read", "type": "input"},
            {
                "id": "shout",
                "type": "stream_transform",
                "params": {"source": "{{ inputs.doc }}", "operation": "upper"},
            },
            {
                "id": "write",
                "type": "stream_transform",
                "params": {
                    "source": "{{ shout.file }}",
                    "operation": "identity",
                    "content_type": "text/plain",
                },
            },
        ],
        "edges": [
            {"source": "read", "target": "shout"},
            {"source": "shout", "target": "write"},
        ],
    }
    stack, _ = running
    token, _ = await new_key(stack, tenant="large", scopes=("read", "write", "execute"))
    settings = stack.services["gateway"].app.state.settings
    quota, settings.files_quota_bytes = settings.files_quota_bytes, 0  # others' quota test
    http.headers.update(bearer(token))
    try:
        await run_large(http, definition)
    finally:
        settings.files_quota_bytes = quota
        http.headers.update(bearer(stack.admin_key))


async def run_large(http: httpx.AsyncClient, definition: dict[str, Any]) -> None:
    created = await http.post("/api/v1/workflows", json=definition)
    assert created.status_code == 201, created.text
    peak = baseline = rss_bytes()
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, rss_bytes())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        uploaded = await http.post("/api/v1/files", params={"name": "big.txt"}, content=body(SIZE))
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["sha256"] == expected_digest(SIZE, upper=False)
        answer = await http.post(
            f"/api/v1/workflows/{created.json()['id']}/run",
            params={"wait": 120},
            json={"inputs": {"doc": uploaded.json()["id"]}},
        )
        assert answer.status_code == 200, answer.text
        execution = (await http.get(f"/api/v1/executions/{answer.json()['id']}")).json()
        assert execution["status"] == "succeeded", execution
        written = node(execution, "write")["output"]["file"]
        assert written["size"] == SIZE
        assert written["sha256"] == expected_digest(SIZE, upper=True)
        detail = await http.get(f"/api/v1/executions/{execution['id']}")
        assert len(detail.content) < 32 * 1024  # references, not the bytes
    finally:
        sampling = False
        await sampler
    growth = peak - baseline
    print(
        f"\n{SIZE / 2**20:.0f} MB through the gateway and 3 nodes: process RSS grew "
        f"{growth / 2**20:.1f} MB (bound {BOUND / 2**20:.0f} MB)"
    )
    assert growth < BOUND, f"RSS grew {growth / 2**20:.1f} MB for a {SIZE / 2**20:.0f} MB file"
