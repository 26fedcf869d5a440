"""Knowledge bases in the tool service (KnowledgeService over gRPC) on the embedded stack:
documents ingested in the background through ai's Embed (offline embedder), retrieval, the
knowledge_search tool, an agent answering with a citation, a corrupt PDF failing alone,
tenants kept apart, deleting a document removes its chunks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from corpus import make_corpus, make_pdf
from heddle.v1 import knowledge_pb2, knowledge_pb2_grpc, tool_pb2, tool_pb2_grpc

from libs.cli.stack import Stack, start_stack
from libs.common.errors import from_rpc_error
from libs.common.grpcutil import create_channel
from libs.common.logging import tenant_id_var
from services.node.executors.base import NodeError
from services.node.grpc_clients import GrpcToolClient
from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow, node, run, wait_final

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def knowledge_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Stack, knowledge_pb2_grpc.KnowledgeServiceStub, grpc.aio.Channel]]:
    folder: Path = tmp_path_factory.mktemp("knowledge")
    overrides = {
        "database_url": f"sqlite+aiosqlite:///{folder / 'heddle.db'}",
        "knowledge_index_path": str(folder / "vectors.sqlite"),
        "knowledge_ingest_interval_s": 0.2,
    }
    running = await start_stack(overrides, ephemeral_ports=True)
    channel = create_channel(f"127.0.0.1:{running.ports['tool']}")
    try:
        yield running, knowledge_pb2_grpc.KnowledgeServiceStub(channel), channel
    finally:
        await channel.close()
        await running.stop()


async def _wait_ingested(
    stub: knowledge_pb2_grpc.KnowledgeServiceStub, kb: str, tenant: str = ""
) -> list[knowledge_pb2.Document]:
    found: list[knowledge_pb2.Document] = []

    async def done() -> bool:
        reply = await stub.ListDocuments(
            knowledge_pb2.KnowledgeBaseRef(tenant_id=tenant, knowledge_base_id=kb), timeout=5
        )
        found[:] = list(reply.documents)
        return all(d.status in ("ingested", "failed") for d in found)

    await assert_eventually(done, timeout=30, interval=0.1, message="documents not ingested")
    return found


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_ingest_retrieve_search_delete_and_tenants(knowledge_stack) -> None:
    _, stub, channel = knowledge_stack
    base = await stub.CreateKnowledgeBase(
        knowledge_pb2.CreateKnowledgeBaseRequest(name="handbook", chunk_size=300, chunk_overlap=50),
        timeout=5,
    )
    assert (base.chunk_size, base.embedding_model, base.tenant_id) == (300, "", "default")
    texts, facts = make_corpus(30, seed=11)
    documents = [
        knowledge_pb2.NewDocument(
            filename=name, text=text, metadata_json=json.dumps({"team": "ops"}).encode()
        )
        for name, text in texts.items()
    ]
    documents.append(
        knowledge_pb2.NewDocument(
            filename="broken.pdf", text="%PDF-1.4 junk", content_type="application/pdf"
        )
    )
    added = await stub.AddDocuments(
        knowledge_pb2.AddDocumentsRequest(knowledge_base_id=base.id, documents=documents),
        timeout=10,
    )
    assert {d.status for d in added.documents} == {"pending"}
    listed = await _wait_ingested(stub, base.id)
    failed = [d for d in listed if d.status == "failed"]
    assert [d.filename for d in failed] == ["broken.pdf"]
    assert failed[0].error.startswith("broken.pdf: ")
    assert "PDF" in failed[0].error
    assert sum(d.status == "ingested" and d.chunks > 0 for d in listed) == 30
    summary = await stub.GetKnowledgeBase(
        knowledge_pb2.KnowledgeBaseRef(knowledge_base_id="handbook"), timeout=5
    )
    assert (summary.documents, summary.documents_ingested, summary.documents_failed) == (31, 30, 1)
    assert summary.chunks == sum(d.chunks for d in listed)

    fact = facts[7]
    reply = await stub.Retrieve(
        knowledge_pb2.RetrieveRequest(
            knowledge_base_id=base.id,
            query=fact.question,
            top_k=3,
            filters_json=json.dumps({"team": "ops"}).encode(),
        ),
        timeout=10,
    )
    chunks = json.loads(reply.chunks_json)
    assert len(chunks) == 3
    best = next(c for c in chunks if c["source"] == fact.document and fact.answer in c["text"])
    assert best["metadata"] == {"team": "ops"}
    assert best["citation"] == f"[{fact.document}#{best['position']}]"

    tools = tool_pb2_grpc.ToolServiceStub(channel)
    result = await tools.CallTool(
        tool_pb2.CallToolRequest(
            name="knowledge_search",
            arguments_json=json.dumps(
                {"knowledge_base": "handbook", "query": fact.question, "top_k": 3}
            ).encode(),
        ),
        timeout=10,
    )
    found = json.loads(result.result_json)
    assert found["citations"] == [c["citation"] for c in chunks]

    # Another tenant sees none of it.
    error = await _error(
        stub.Retrieve(
            knowledge_pb2.RetrieveRequest(tenant_id="acme", knowledge_base_id=base.id, query="x"),
            timeout=5,
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    other = await stub.ListKnowledgeBases(
        knowledge_pb2.ListKnowledgeBasesRequest(tenant_id="acme"), timeout=5
    )
    assert list(other.knowledge_bases) == []

    # Delete a document: its chunks are gone from retrieval.
    target = next(d for d in listed if d.filename == fact.document)
    await stub.DeleteDocument(
        knowledge_pb2.DocumentRef(knowledge_base_id=base.id, document_id=target.id), timeout=5
    )
    reply = await stub.Retrieve(
        knowledge_pb2.RetrieveRequest(knowledge_base_id=base.id, query=fact.question, top_k=50),
        timeout=10,
    )
    assert all(c["document_id"] != target.id for c in json.loads(reply.chunks_json))
    after = await stub.GetKnowledgeBase(
        knowledge_pb2.KnowledgeBaseRef(knowledge_base_id=base.id), timeout=5
    )
    assert after.chunks == summary.chunks - target.chunks


async def test_bad_input_is_invalid_argument_naming_the_field(knowledge_stack) -> None:
    _, stub, _ = knowledge_stack
    base = await stub.CreateKnowledgeBase(
        knowledge_pb2.CreateKnowledgeBaseRequest(name="bad-input"), timeout=5
    )
    error = await _error(
        stub.CreateKnowledgeBase(
            knowledge_pb2.CreateKnowledgeBaseRequest(name="bad-input"), timeout=5
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    cases = [
        (
            stub.AddDocuments(
                knowledge_pb2.AddDocumentsRequest(
                    knowledge_base_id=base.id,
                    documents=[
                        knowledge_pb2.NewDocument(
                            filename="a.txt", text="x", metadata_json=b'{"source": "y"}'
                        )
                    ],
                ),
                timeout=5,
            ),
            "documents[0].metadata.source",
        ),
        (
            stub.Retrieve(
                knowledge_pb2.RetrieveRequest(
                    knowledge_base_id=base.id, query="q", filters_json=b'{"team": {"$ne": 1}}'
                ),
                timeout=5,
            ),
            "filters.team",
        ),
        (
            stub.CreateKnowledgeBase(
                knowledge_pb2.CreateKnowledgeBaseRequest(name="tiny", chunk_size=10), timeout=5
            ),
            "chunk size",
        ),
    ]
    for call, where in cases:
        error = await _error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert where in from_rpc_error(error).message


async def test_retrieve_node_and_an_agent_answering_with_a_citation(knowledge_stack) -> None:
    running, stub, _ = knowledge_stack
    base = await stub.CreateKnowledgeBase(
        knowledge_pb2.CreateKnowledgeBaseRequest(name="ferries", chunk_size=200, chunk_overlap=20),
        timeout=5,
    )
    pdf = make_pdf([["Timetable."], ["The Quorvantic ferry leaves from Pier Seventeen."]])
    await stub.AddDocuments(
        knowledge_pb2.AddDocumentsRequest(
            knowledge_base_id=base.id,
            documents=[
                knowledge_pb2.NewDocument(filename="notes.md", text="# Notes\n\nNothing here."),
                knowledge_pb2.NewDocument(
                    filename="timetable.pdf",
                    text=pdf.decode("latin-1"),
                    content_type="application/pdf",
                ),
            ],
        ),
        timeout=5,
    )
    listed = await _wait_ingested(stub, base.id)
    assert {d.status for d in listed} == {"ingested"}, listed
    search = {
        "knowledge_base": "ferries",
        "query": "Where does the Quorvantic ferry leave?",
        "top_k": 1,
    }
    definition = {
        "name": "rag",
        "nodes": [
            {
                "id": "agent",
                "type": "agent",
                "params": {
                    "model": "echo",
                    "instructions": "Answer from the knowledge base and cite it.",
                    "prompt": f"[[tool:knowledge_search {json.dumps(search)}]]",
                    "tools": ["knowledge_search"],
                    "max_steps": 3,
                },
            }
        ],
        "outputs": {"answer": "{{ agent.text }}"},
    }
    headers = {"Authorization": f"Bearer {running.admin_key}"} if running.admin_key else {}
    async with httpx.AsyncClient(base_url=running.gateway_url, timeout=30, headers=headers) as http:
        execution = await wait_final(http, await run(http, await create_workflow(http, definition)))
    assert execution["status"] == "succeeded", execution
    answer = execution["outputs"]["answer"]
    assert "[timetable.pdf#" in answer and "Pier Seventeen" in answer, answer
    assert node(execution, "agent")["output"]["steps"]

    retrieve = {
        "name": "retrieve",
        "inputs": {"question": {"type": "string", "required": True}},
        "nodes": [
            {
                "id": "find",
                "type": "retrieve",
                "params": {
                    "knowledge_base": "ferries",
                    "query": "{{ inputs.question }}",
                    "top_k": 2,
                    "score_threshold": 0.05,
                },
            }
        ],
        "outputs": {"chunks": "{{ find.chunks }}"},
    }
    async with httpx.AsyncClient(base_url=running.gateway_url, timeout=30, headers=headers) as http:
        workflow_id = await create_workflow(http, retrieve)
        execution = await wait_final(
            http, await run(http, workflow_id, {"question": "Quorvantic ferry pier"})
        )
    assert execution["status"] == "succeeded", execution
    chunks = execution["outputs"]["chunks"]
    assert chunks[0]["source"] == "timetable.pdf" and chunks[0]["location"]["page"] == 2
    assert chunks[0]["score"] > 0.05 and isinstance(chunks[0]["position"], int)


async def test_a_node_searches_its_own_tenants_knowledge_only(knowledge_stack) -> None:
    """The node service's tool calls carry the execution's tenant: knowledge_search from a
    node of another tenant does not reach this tenant's base (it ran as 'default' before)."""
    _, stub, channel = knowledge_stack
    base = await stub.CreateKnowledgeBase(
        knowledge_pb2.CreateKnowledgeBaseRequest(tenant_id="acme", name="harbour"), timeout=5
    )
    await stub.AddDocuments(
        knowledge_pb2.AddDocumentsRequest(
            tenant_id="acme",
            knowledge_base_id=base.id,
            documents=[
                knowledge_pb2.NewDocument(
                    filename="harbour.md", text="The harbour master is Ilsabet Vorn."
                )
            ],
        ),
        timeout=5,
    )
    listed = await _wait_ingested(stub, base.id, tenant="acme")
    assert {d.status for d in listed} == {"ingested"}, listed
    tools = GrpcToolClient(channel, deadline_s=10)
    arguments = {"knowledge_base": "harbour", "query": "Who is the harbour master?"}
    token = tenant_id_var.set("acme")
    try:
        found = await tools.call("knowledge_search", arguments)
    finally:
        tenant_id_var.reset(token)
    assert "Ilsabet Vorn" in json.dumps(found), found
    token = tenant_id_var.set("default")
    try:
        with pytest.raises(NodeError) as refused:
            await tools.call("knowledge_search", arguments)
    finally:
        tenant_id_var.reset(token)
    assert "harbour" in refused.value.message, refused.value.message


async def test_http_api_files_and_text_to_retrieval(knowledge_stack) -> None:
    running, _, _ = knowledge_stack
    headers = {"Authorization": f"Bearer {running.admin_key}"} if running.admin_key else {}
    async with httpx.AsyncClient(base_url=running.gateway_url, timeout=30, headers=headers) as http:
        created = await http.post(
            "/api/v1/knowledge-bases", json={"name": "api", "chunk_size": 200, "chunk_overlap": 20}
        )
        assert created.status_code == 201, created.text
        kb = created.json()["id"]
        assert created.headers["location"] == f"/api/v1/knowledge-bases/{kb}"
        html = b"<html><body><h1>Harbours</h1><p>The Zentrova dock opens at dawn.</p></body></html>"
        uploaded = await http.post(
            "/api/v1/files",
            params={"name": "docks.html"},
            content=html,
            headers={"Content-Type": "text/html"},
        )
        assert uploaded.status_code == 201, uploaded.text
        added = await http.post(
            f"/api/v1/knowledge-bases/{kb}/documents",
            json={
                "documents": [
                    {"file_id": uploaded.json()["id"], "metadata": {"lang": "en"}},
                    {"text": "# Ferries\n\nThe Quorvantic ferry is blue.", "filename": "f.md"},
                ]
            },
        )
        assert added.status_code == 202, added.text
        assert [d["status"] for d in added.json()["documents"]] == ["pending", "pending"]

        async def ingested() -> bool:
            listed = await http.get(f"/api/v1/knowledge-bases/{kb}/documents")
            return {d["status"] for d in listed.json()["documents"]} == {"ingested"}

        await assert_eventually(ingested, timeout=30, interval=0.1, message="not ingested")
        found = await http.post(
            f"/api/v1/knowledge-bases/{kb}/retrieve",
            json={
                "query": "When does the Zentrova dock open?",
                "top_k": 1,
                "filters": {"lang": "en"},
            },
        )
        assert found.status_code == 200, found.text
        chunk = found.json()["chunks"][0]
        assert chunk["source"] == "docks.html" and "dawn" in chunk["text"]
        assert "<p>" not in chunk["text"]

        # Bad input: located 4xx, nothing added.
        for body, code, where in [
            ({"documents": [{"text": "x"}]}, 422, "filename"),
            ({"documents": [{"text": "x", "filename": "a", "file_id": "y"}]}, 422, "exactly one"),
            ({"documents": [{"file_id": "00000000-0000-0000-0000-000000000000"}]}, 404, "file_id"),
        ]:
            refused = await http.post(f"/api/v1/knowledge-bases/{kb}/documents", json=body)
            assert refused.status_code == code, refused.text
            assert where in refused.text
        listed = await http.get(f"/api/v1/knowledge-bases/{kb}/documents")
        documents = listed.json()["documents"]
        assert len(documents) == 2
        assert (await http.get("/api/v1/knowledge-bases/not-an-id")).status_code == 404

        gone = await http.delete(f"/api/v1/knowledge-bases/{kb}/documents/{documents[0]['id']}")
        assert gone.status_code == 204
        after = (await http.get(f"/api/v1/knowledge-bases/{kb}")).json()
        assert (after["documents"], after["chunks"]) == (1, documents[1]["chunks"])
        assert (await http.delete(f"/api/v1/knowledge-bases/{kb}")).status_code == 204
        assert (await http.get(f"/api/v1/knowledge-bases/{kb}")).status_code == 404
        names = [
            b["name"] for b in (await http.get("/api/v1/knowledge-bases")).json()["knowledge_bases"]
        ]
        assert "api" not in names


async def test_ingestion_progress_streams_as_server_sent_events(knowledge_stack) -> None:
    """GET /knowledge-bases/{id}/events: each document's progress (queued, ingesting,
    chunked n, embedded k of n, ingested) and the corrupt PDF's failure naming the file."""
    running, stub, _ = knowledge_stack
    headers = {"Authorization": f"Bearer {running.admin_key}"} if running.admin_key else {}
    async with httpx.AsyncClient(base_url=running.gateway_url, timeout=30, headers=headers) as http:
        created = await http.post(
            "/api/v1/knowledge-bases",
            json={"name": "progress", "chunk_size": 100, "chunk_overlap": 10},
        )
        kb = created.json()["id"]
        broken = await http.post(
            "/api/v1/files",
            params={"name": "broken.pdf"},
            content=b"%PDF-1.7 this is not a PDF at all",
            headers={"Content-Type": "application/pdf"},
        )
        assert broken.status_code == 201, broken.text
        long_text = "\n\n".join(f"Paragraph {i} tells of harbour {i}." * 4 for i in range(30))
        documents = [
            {"text": long_text, "filename": "long.md"},
            {"text": "# Short\n\nOne chunk only.", "filename": "short.md"},
            {"file_id": broken.json()["id"]},
        ]
        events: list[dict[str, Any]] = []
        async with http.stream("GET", f"/api/v1/knowledge-bases/{kb}/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()

            async def next_event() -> dict[str, Any]:
                kind = ""
                async for line in lines:
                    if line.startswith("event: "):
                        kind = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        event = json.loads(line.removeprefix("data: "))
                        assert event["type"] == kind
                        return event
                raise AssertionError("the stream ended")

            assert (await next_event())["type"] == "knowledge.stream.opened"
            added = await http.post(
                f"/api/v1/knowledge-bases/{kb}/documents", json={"documents": documents}
            )
            assert added.status_code == 202, added.text
            final = {"knowledge.document.ingested", "knowledge.document.failed"}
            while sum(e["type"] in final for e in events) < 3:
                events.append(await asyncio.wait_for(next_event(), 30))

    by_file: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        assert event["knowledge_base_id"] == kb
        by_file.setdefault(event["filename"], []).append(event)
    assert set(by_file) == {"long.md", "short.md", "broken.pdf"}
    stages = {name: [e["type"].rsplit(".", 1)[1] for e in got] for name, got in by_file.items()}
    long_events = by_file["long.md"]
    total = long_events[-1]["chunks"]
    assert total > 1
    embedded = [e["embedded"] for e in long_events if e["type"].endswith(".embedded")]
    # Batches of knowledge_embed_batch: k of n, growing to n.
    assert embedded and embedded == sorted(embedded) and embedded[-1] == total
    assert all(e["chunks"] == total for e in long_events[2:]), long_events
    assert stages["long.md"] == [
        "queued",
        "ingesting",
        "chunked",
        *["embedded"] * len(embedded),
        "ingested",
    ]
    assert stages["short.md"] == ["queued", "ingesting", "chunked", "embedded", "ingested"]
    assert stages["broken.pdf"] == ["queued", "ingesting", "failed"]
    failure = by_file["broken.pdf"][-1]
    assert "broken.pdf" in failure["error"], failure

    async with httpx.AsyncClient(base_url=running.gateway_url, timeout=30, headers=headers) as http:
        unknown = await http.get(
            "/api/v1/knowledge-bases/00000000-0000-0000-0000-000000000000/events"
        )
        assert unknown.status_code == 404, unknown.text
        assert (await http.get("/api/v1/knowledge-bases/not-an-id/events")).status_code == 404
    # Another tenant's base is not found, as for every knowledge call.
    ref = knowledge_pb2.KnowledgeBaseRef(tenant_id="other", knowledge_base_id=kb)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StreamEvents(ref, timeout=10).read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
