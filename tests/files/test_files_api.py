"""The files API on the embedded stack: streamed uploads (multipart and raw) past the
gateway's body limit, SHA-256, metadata, content with Range, list, delete, the per-tenant limit
(413, nothing stored), the quota (429), another tenant's id (404), RBAC scopes, retention."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from libs.cli.stack import Stack
from services.gateway.files import files_of
from tests.files.conftest import MB
from tests.security.support import bearer, new_key

pytestmark = pytest.mark.asyncio(loop_scope="package")


def stored_files(artifacts: Path) -> list[Path]:
    return [p for p in artifacts.rglob("*") if p.is_file()] if artifacts.exists() else []


async def test_multipart_upload_past_the_body_limit_and_read_back(
    http: httpx.AsyncClient,
) -> None:
    data = os.urandom(3 * MB)  # above max_body_bytes (2 MB): the upload route streams
    answer = await http.post(
        "/api/v1/files", files={"file": ("report.csv", data, "text/csv; charset=utf-8")}
    )
    assert answer.status_code == 201, answer.text
    meta = answer.json()
    assert meta["name"] == "report.csv" and meta["content_type"] == "text/csv"
    assert (meta["size"], meta["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert answer.headers["location"] == f"/api/v1/files/{meta['id']}"
    assert (await http.get(f"/api/v1/files/{meta['id']}")).json() == meta
    content = await http.get(meta["content_url"])
    assert content.status_code == 200 and content.content == data
    assert content.headers["content-type"].startswith("text/csv")
    assert content.headers["accept-ranges"] == "bytes"
    part = await http.get(meta["content_url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = await http.get(meta["content_url"], headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    outside = await http.get(meta["content_url"], headers={"Range": f"bytes={len(data)}-"})
    assert outside.status_code == 416 and outside.json()["error"]["code"] == "range_not_satisfiable"
    listed = (await http.get("/api/v1/files", params={"page_size": 200})).json()
    assert meta["id"] in [item["id"] for item in listed["items"]]


async def test_raw_upload_streamed_without_content_length(http: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"a" * 1000

    answer = await http.post(
        "/api/v1/files",
        params={"name": "a.txt"},
        content=body(),
        headers={"Content-Type": "text/plain"},
    )
    assert answer.status_code == 201, answer.text
    meta = answer.json()
    assert (meta["name"], meta["content_type"], meta["size"]) == ("a.txt", "text/plain", 10000)
    assert meta["sha256"] == hashlib.sha256(b"a" * 10000).hexdigest()


async def test_over_the_limit_is_413_and_nothing_is_stored(
    running: tuple[Stack, Path], http: httpx.AsyncClient
) -> None:
    _, artifacts = running
    before = stored_files(artifacts)
    total = (await http.get("/api/v1/files")).json()["total"]
    declared = await http.post("/api/v1/files", content=b"x" * (4 * MB + 1))
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"]["code"] == "payload_too_large"
    assert "4194304 bytes" in declared.json()["error"]["message"]

    async def endless() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(5):
            yield b"y" * MB

    streamed = await http.post("/api/v1/files", content=endless())
    assert streamed.status_code == 413, streamed.text
    multipart = await http.post(
        "/api/v1/files", files={"file": ("big.bin", b"z" * (4 * MB + 100 * 1024))}
    )
    assert multipart.status_code == 413, multipart.text
    assert stored_files(artifacts) == before  # partial uploads were deleted
    assert (await http.get("/api/v1/files")).json()["total"] == total


async def test_per_tenant_limit_quota_and_isolation(
    running: tuple[Stack, Path], http: httpx.AsyncClient
) -> None:
    stack, _ = running
    small, _ = await new_key(stack, tenant="small", scopes=("read", "write"))
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=30, headers=bearer(small)
    ) as other:
        refused = await other.post("/api/v1/files", content=b"q" * 1001)
        assert refused.status_code == 413 and "1000 bytes" in refused.json()["error"]["message"]
        mine = (await other.post("/api/v1/files", content=b"ok")).json()
        theirs = (await http.post("/api/v1/files", content=b"secret")).json()
        for path in ("", "/content"):
            hidden = await other.get(f"/api/v1/files/{theirs['id']}{path}")
            assert hidden.status_code == 404, hidden.text
            assert (await http.get(f"/api/v1/files/{mine['id']}{path}")).status_code == 404
        assert (await other.delete(f"/api/v1/files/{theirs['id']}")).status_code == 404
        assert (await http.get(f"/api/v1/files/{theirs['id']}")).status_code == 200
        listed = (await other.get("/api/v1/files")).json()
        assert [item["id"] for item in listed["items"]] == [mine["id"]]
    reader, _ = await new_key(stack, tenant="small", scopes=("read",))
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=30, headers=bearer(reader)
    ) as read_only:
        assert (await read_only.get(f"/api/v1/files/{mine['id']}")).status_code == 200
        assert (await read_only.post("/api/v1/files", content=b"no")).status_code == 403
        assert (await read_only.delete(f"/api/v1/files/{mine['id']}")).status_code == 403
    # The quota (10 MB) counts what the tenant keeps: 429 and nothing stored past it.
    big = os.urandom(4 * MB)
    while True:
        answer = await http.post("/api/v1/files", content=big)
        if answer.status_code != 201:
            break
    assert answer.status_code == 429 and "quota" in answer.json()["error"]["message"], answer.text


async def test_delete_and_retention(running: tuple[Stack, Path], http: httpx.AsyncClient) -> None:
    stack, artifacts = running
    meta = (await http.post("/api/v1/files", content=b"to delete")).json()
    before = len(stored_files(artifacts))
    assert (await http.delete(f"/api/v1/files/{meta['id']}")).status_code == 204
    assert (await http.get(f"/api/v1/files/{meta['id']}")).status_code == 404
    assert (await http.delete(f"/api/v1/files/{meta['id']}")).status_code == 404
    assert len(stored_files(artifacts)) == before - 1
    # Retention: an expired file is gone from the API at once and removed by the loop's step.
    app = stack.services["gateway"].app
    repository = files_of(app)
    kept = (await http.post("/api/v1/files", content=b"old")).json()
    stored = await repository.require("default", kept["id"])
    from sqlalchemy import update

    from libs.common.db import utcnow
    from services.gateway.models import FileRow

    async with repository.database.transaction() as session:
        await session.execute(
            update(FileRow).where(FileRow.id == kept["id"]).values(expires_at=utcnow())
        )
    assert (await http.get(f"/api/v1/files/{kept['id']}")).status_code == 404
    assert await repository.remove_expired() == 1
    assert not await repository.store.exists(stored.artifact_key)


async def test_bad_requests_are_4xx(http: httpx.AsyncClient) -> None:
    form = b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--B--\r\n'
    no_file = await http.post(
        "/api/v1/files",
        content=form,
        headers={"Content-Type": "multipart/form-data; boundary=B"},
    )
    assert no_file.status_code == 422 and "file part" in no_file.json()["error"]["message"]
    no_boundary = await http.post(
        "/api/v1/files", content=b"x", headers={"Content-Type": "multipart/form-data"}
    )
    assert no_boundary.status_code == 422
    assert (await http.get("/api/v1/files/not-a-uuid")).status_code == 404
    empty = await http.post("/api/v1/files")
    assert empty.status_code == 422 and "no body" in empty.json()["error"]["message"]
    bad_range = await http.get(
        (await http.post("/api/v1/files", content=b"abc")).json()["content_url"],
        headers={"Range": "items=1-2"},
    )
    assert bad_range.status_code == 416
