"""The console and values by reference (issue #18) and loop iterations (issue #19), in Chromium
against one embedded stack for the module: a 5 MB node output stored once, shown with its
size, type, digest, preview and a download link that downloads the exact bytes, and a cache
hit on the same content; a file input uploaded from the run form and read by the node; a
loop's iterations listed in its node detail."""

from __future__ import annotations

import hashlib
import re
import struct
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from libs.cli.stack import Stack, start_stack
from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, watched_page
from tests.files.test_claim_check import PIECE, big_workflow
from tests.security.support import bearer

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Stack, Path]]:
    root = tmp_path_factory.mktemp("console-artifacts")
    artifacts = root / "artifacts"
    stack = await start_stack(
        {
            "database_url": f"sqlite+aiosqlite:///{root / 'heddle.db'}",
            "artifact_url": f"file://{artifacts}",
            "http_allow_hosts": ["127.0.0.1"],
        },
        ephemeral_ports=True,
    )
    try:
        yield stack, artifacts
    finally:
        await stack.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(running: tuple[Stack, Path]) -> AsyncIterator[httpx.AsyncClient]:
    stack, _ = running
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=60, headers=bearer(stack.admin_key)
    ) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(chromium: Browser, running: tuple[Stack, Path]) -> AsyncIterator[Page]:
    """A page on the module's stack (signed in with the development key); the test fails
    on any console error or uncaught page error."""
    stack, _ = running
    async with watched_page(
        chromium, stack.gateway_url, viewport=(1280, 900), timeout_ms=20_000
    ) as opened:
        yield opened


async def create(api: httpx.AsyncClient, definition: dict[str, Any]) -> str:
    created = await api.post("/api/v1/workflows", json=definition)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def run_and_wait(api: httpx.AsyncClient, workflow_id: str) -> dict[str, Any]:
    answer = await api.post(
        f"/api/v1/workflows/{workflow_id}/run", params={"wait": 60}, json={"inputs": {}}
    )
    assert answer.status_code == 200, answer.text
    execution = await api.get(f"/api/v1/executions/{answer.json()['id']}")
    assert execution.status_code == 200, execution.text
    return dict(execution.json())


def png(width: int, height: int) -> bytes:
    """A valid RGB PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xd0\x40\x20" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def node(execution: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in execution["nodes"] if n["node_id"] == node_id)


async def open_node(page: Page, execution_id: str, node_id: str) -> None:
    await page.goto(f"/#/executions/{execution_id}")
    await expect(page.get_by_test_id("execution-status")).to_be_visible()
    await page.get_by_test_id(f"exec-node-{node_id}").click()
    await expect(page.get_by_test_id("node-detail")).to_have_attribute("data-node", node_id)


async def test_a_5_mb_output_is_shown_by_reference_and_downloads_exactly(
    running: tuple[Stack, Path], api: httpx.AsyncClient, page: Page, tmp_path: Path
) -> None:
    _, artifacts = running
    workflow_id = await create(api, big_workflow(f"big-{uuid.uuid4().hex[:8]}"))
    first = await run_and_wait(api, workflow_id)
    assert first["status"] == "succeeded", first
    ref = node(first, "big")["output"]["value"]
    assert ref["size"] > 5_000_000
    # Stored once, in the store; referenced downstream (the next node read the value).
    stored = artifacts / ref["$ref"].removeprefix("artifact://")
    assert stored.stat().st_size == ref["size"]
    assert [p.name for p in stored.parent.iterdir()] == [ref["sha256"]]
    assert node(first, "measure")["output"] == {"value": {"length": 5 * PIECE, "head": "xxx"}}

    await open_node(page, first["id"], "big")
    card = page.get_by_test_id("node-output-artifacts").get_by_test_id("artifact")
    await expect(card).to_have_count(1)
    await expect(card.get_by_test_id("artifact-size")).to_have_text("4.8 MiB")
    await expect(card.get_by_test_id("artifact-type")).to_have_text("application/json")
    await expect(card.get_by_test_id("artifact-sha")).to_have_text(f"sha256 {ref['sha256'][:12]}")
    # The preview is the first 4 KB (a Range request), not the 5 MB.
    preview = card.get_by_test_id("artifact-preview")
    await expect(preview).to_have_text(re.compile(r'^\["x{100,}.*…$', re.S))
    assert len(await preview.inner_text()) < 5000
    link = card.get_by_test_id("artifact-download")
    await expect(link).to_have_attribute("href", re.compile(r"^/api/v1/artifacts/download/"))
    async with page.expect_download() as waiting:
        await link.click()
    download = await waiting.value
    saved = tmp_path / "big.json"
    await download.save_as(saved)
    data = saved.read_bytes()
    assert len(data) == ref["size"]
    assert hashlib.sha256(data).hexdigest() == ref["sha256"]

    # The same content again: a cache hit, shown as such, with the same reference.
    second = await run_and_wait(api, workflow_id)
    assert node(second, "big")["status"] == "cached", second
    assert node(second, "big")["output"]["value"] == ref
    assert [p.name for p in stored.parent.iterdir()] == [ref["sha256"]]
    await open_node(page, second["id"], "big")
    await expect(page.get_by_test_id("node-status")).to_have_text("cached")
    card = page.get_by_test_id("node-output-artifacts").get_by_test_id("artifact")
    await expect(card).to_have_attribute("data-ref", ref["$ref"])


async def test_a_file_input_is_uploaded_from_the_run_form_and_read_by_the_node(
    api: httpx.AsyncClient, page: Page
) -> None:
    content = b"hello from the run form\n" * 50
    workflow_id = await create(
        api,
        {
            "name": f"upload-{uuid.uuid4().hex[:8]}",
            "inputs": {"doc": {"type": "file", "required": True}, "pic": {"type": "file"}},
            "nodes": [
                {"id": "start", "type": "input"},
                {
                    "id": "shout",
                    "type": "stream_transform",
                    "params": {"source": "{{ inputs.doc }}", "operation": "upper"},
                },
            ],
            "edges": [{"source": "start", "target": "shout"}],
        },
    )
    await page.goto(f"/#/workflows/{workflow_id}/run")
    await expect(page.get_by_test_id("run-form")).to_be_visible()
    await page.get_by_test_id("run-input-doc").set_input_files(
        {"name": "note.txt", "mimeType": "text/plain", "buffer": content}
    )
    uploaded = page.get_by_test_id("run-input-doc-uploaded")
    await expect(uploaded).to_contain_text("note.txt")
    file_id = await uploaded.get_attribute("data-file-id")
    assert file_id
    await page.get_by_test_id("run-input-pic").set_input_files(
        {"name": "dot.png", "mimeType": "image/png", "buffer": png(24, 16)}
    )
    await expect(page.get_by_test_id("run-input-pic-uploaded")).to_contain_text("dot.png")
    stored = (await api.get(f"/api/v1/files/{file_id}")).json()
    assert stored["size"] == len(content)
    assert stored["sha256"] == hashlib.sha256(content).hexdigest()
    await page.get_by_test_id("run-submit").click()
    await page.wait_for_url(re.compile(r"#/executions/[0-9a-f-]{36}$"))
    execution_id = page.url.rsplit("/", 1)[1]
    await expect(page.get_by_test_id("execution-status")).to_have_text("succeeded")
    execution = (await api.get(f"/api/v1/executions/{execution_id}")).json()
    assert execution["inputs"]["doc"]["file_id"] == file_id
    # The node read the file's bytes: its output is their upper-case copy.
    written = node(execution, "shout")["output"]["file"]
    copy = await api.get(
        "/api/v1/artifacts/content",
        params={"ref": written["$ref"], "content_type": written["content_type"]},
    )
    assert copy.status_code == 200, copy.text
    assert copy.content == content.upper()
    # The console shows the input files (the image inline) and the node's output file with
    # a preview.
    inputs = page.get_by_test_id("execution-inputs-artifacts").get_by_test_id("artifact")
    await expect(inputs).to_have_count(2)
    await expect(inputs.nth(0).get_by_test_id("artifact-preview")).to_contain_text(
        "hello from the run form"
    )
    image = inputs.nth(1).get_by_test_id("artifact-image")
    await expect(image).to_be_visible()
    await image.evaluate(
        "(img) => img.complete ? null : new Promise((done) => img.addEventListener('load', done))"
    )
    assert await image.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [24, 16]
    await page.get_by_test_id("exec-node-shout").click()
    card = page.get_by_test_id("node-output-artifacts").get_by_test_id("artifact")
    await expect(card.get_by_test_id("artifact-preview")).to_contain_text("HELLO FROM THE RUN FORM")


async def test_a_loop_lists_its_iterations_in_the_node_detail(
    api: httpx.AsyncClient, page: Page
) -> None:
    workflow_id = await create(
        api,
        {
            "name": f"loop-{uuid.uuid4().hex[:8]}",
            "nodes": [
                {"id": "start", "type": "input"},
                {
                    "id": "count",
                    "type": "loop",
                    "params": {
                        "max_iterations": 5,
                        "node": {"type": "transform", "params": {"expression": "loop.index * 10"}},
                        "until": "{{ loop.index >= 2 }}",
                    },
                },
            ],
            "edges": [{"source": "start", "target": "count"}],
        },
    )
    execution = await run_and_wait(api, workflow_id)
    assert execution["status"] == "succeeded", execution
    await open_node(page, execution["id"], "count")
    listed = page.get_by_test_id("loop-iterations")
    await expect(listed).to_have_attribute("data-total", "3")
    rows = listed.get_by_test_id("loop-iteration")
    await expect(rows).to_have_count(3)
    for index in range(3):
        row = rows.nth(index)
        await expect(row).to_have_attribute("data-index", str(index))
        await expect(row).to_have_attribute("data-status", "succeeded")
    last = rows.nth(2)
    await last.get_by_text("output").click()
    await expect(last.get_by_test_id("loop-iteration-output")).to_contain_text('"value": 20')
