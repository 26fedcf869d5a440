"""Knowledge bases (the tool service's KnowledgeService): bases, documents, retrieval.

Documents are uploaded files (``file_id`` from ``/api/v1/files``, read by the tool service
from the artifact store) or raw text; they are ingested in the background, and their
``status`` tells how far (pending, ingesting, ingested, failed with the error naming the file).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from heddle.v1 import knowledge_pb2
from pydantic import BaseModel, ConfigDict, Field, model_validator

from libs.common import jsonutil
from libs.common.errors import DeadlineExceeded, HeddleError, NotFound
from libs.common.jsontypes import JsonFloat, JsonInt
from services.gateway.errors import error_body
from services.gateway.files import files_of
from services.gateway.routes.common import (
    ERROR_RESPONSES,
    Caller,
    Clients,
    Guard,
    Tenant,
    checked_id,
    get_settings,
)
from services.gateway.streams import RETRY, with_heartbeat

router = APIRouter(prefix="/api/v1/knowledge-bases", tags=["knowledge"], responses=ERROR_RESPONSES)

Scalar = str | int | float | bool


class KnowledgeBaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    embedding_model: str = Field(
        default="", max_length=200, description="An ai model; empty: the default (offline) one."
    )
    chunk_size: JsonInt = Field(default=800, ge=50, le=20000, description="Characters per chunk.")
    chunk_overlap: JsonInt = Field(default=100, ge=0, le=10000, description="Characters shared.")


class KnowledgeBaseOut(BaseModel):
    id: str
    name: str
    description: str
    embedding_model: str
    chunk_size: int
    chunk_overlap: int
    documents: int
    documents_ingested: int
    documents_failed: int
    chunks: int
    created_at: str


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_id: str | None = Field(default=None, description="An uploaded file's id.")
    text: str | None = Field(default=None, max_length=5_000_000, description="Raw text.")
    filename: str | None = Field(
        default=None, max_length=255, description="Needed with text; a file's name otherwise."
    )
    content_type: str = Field(default="", max_length=255)
    metadata: dict[str, Scalar] = Field(
        default_factory=dict, description="Flat metadata that retrieve filters match."
    )

    @model_validator(mode="after")
    def _one_source(self) -> DocumentIn:
        if (self.file_id is None) == (self.text is None):
            raise ValueError("exactly one of file_id or text")
        if self.text is not None and not self.filename:
            raise ValueError("a text document needs a filename")
        return self


class DocumentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1, max_length=500)


class DocumentOut(BaseModel):
    id: str
    knowledge_base_id: str
    filename: str
    content_type: str
    file_id: str
    status: str
    chunks: int
    error: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str


class DocumentList(BaseModel):
    documents: list[DocumentOut]


class KnowledgeBaseList(BaseModel):
    knowledge_bases: list[KnowledgeBaseOut]


class RetrieveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=10000)
    top_k: JsonInt = Field(default=5, ge=1, le=100)
    score_threshold: JsonFloat | None = None
    filters: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)


class RetrievedChunk(BaseModel):
    text: str
    score: float
    document_id: str
    source: str
    position: int
    location: dict[str, Any]
    metadata: dict[str, Any]
    citation: str


class RetrieveOut(BaseModel):
    chunks: list[RetrievedChunk]


def _base(reply: knowledge_pb2.KnowledgeBase) -> KnowledgeBaseOut:
    return KnowledgeBaseOut(
        id=reply.id,
        name=reply.name,
        description=reply.description,
        embedding_model=reply.embedding_model,
        chunk_size=reply.chunk_size,
        chunk_overlap=reply.chunk_overlap,
        documents=reply.documents,
        documents_ingested=reply.documents_ingested,
        documents_failed=reply.documents_failed,
        chunks=reply.chunks,
        created_at=reply.created_at,
    )


def _document(reply: knowledge_pb2.Document) -> DocumentOut:
    return DocumentOut(
        id=reply.id,
        knowledge_base_id=reply.knowledge_base_id,
        filename=reply.filename,
        content_type=reply.content_type,
        file_id=reply.file_id,
        status=reply.status,
        chunks=reply.chunks,
        error=reply.error,
        metadata=json.loads(reply.metadata_json or b"{}"),
        created_at=reply.created_at,
        updated_at=reply.updated_at,
    )


def _ref(tenant: str, kb_id: str) -> knowledge_pb2.KnowledgeBaseRef:
    return knowledge_pb2.KnowledgeBaseRef(
        tenant_id=tenant, knowledge_base_id=checked_id(kb_id, "knowledge base")
    )


@router.get("", summary="List knowledge bases")
async def list_knowledge_bases(
    clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> KnowledgeBaseList:
    guard.require(caller, "read_knowledge")
    reply = await clients.call(
        clients.knowledge.ListKnowledgeBases,
        knowledge_pb2.ListKnowledgeBasesRequest(tenant_id=tenant),
    )
    return KnowledgeBaseList(knowledge_bases=[_base(b) for b in reply.knowledge_bases])


@router.post("", status_code=status.HTTP_201_CREATED, summary="Create a knowledge base")
async def create_knowledge_base(
    body: KnowledgeBaseIn,
    request: Request,
    response: Response,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> KnowledgeBaseOut:
    guard.require(caller, "write_knowledge")
    reply = await clients.call(
        clients.knowledge.CreateKnowledgeBase,
        knowledge_pb2.CreateKnowledgeBaseRequest(
            tenant_id=tenant,
            name=body.name,
            description=body.description,
            embedding_model=body.embedding_model,
            chunk_size=body.chunk_size,
            chunk_overlap=body.chunk_overlap,
        ),
    )
    request.state.audit_object_id = reply.id
    response.headers["Location"] = f"/api/v1/knowledge-bases/{reply.id}"
    return _base(reply)


@router.get("/{kb_id}", summary="Read a knowledge base, with its document and chunk counts")
async def get_knowledge_base(
    kb_id: str, clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> KnowledgeBaseOut:
    guard.require(caller, "read_knowledge")
    return _base(await clients.call(clients.knowledge.GetKnowledgeBase, _ref(tenant, kb_id)))


@router.delete(
    "/{kb_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a knowledge base, its documents and chunks",
)
async def delete_knowledge_base(
    kb_id: str, clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> None:
    guard.require(caller, "write_knowledge")
    await clients.call(clients.knowledge.DeleteKnowledgeBase, _ref(tenant, kb_id))


@router.post(
    "/{kb_id}/documents",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Add documents (uploaded files or text); they are ingested in the background",
)
async def add_documents(
    kb_id: str,
    body: DocumentsIn,
    request: Request,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> DocumentList:
    guard.require(caller, "write_knowledge")
    ref = _ref(tenant, kb_id)
    documents = []
    for number, document in enumerate(body.documents):
        if document.file_id is not None:
            stored = await files_of(request.app).get(tenant, document.file_id)
            if stored is None:  # another tenant's file is not found either
                raise NotFound(
                    f"documents[{number}].file_id: file {document.file_id!r} not found",
                    [{"path": f"documents[{number}].file_id", "message": "not found"}],
                )
            documents.append(
                knowledge_pb2.NewDocument(
                    filename=document.filename or stored.name,
                    content_type=document.content_type or stored.content_type,
                    artifact_json=json.dumps(stored.ref.to_json()).encode(),
                    file_id=stored.id,
                    metadata_json=json.dumps(document.metadata).encode(),
                )
            )
        else:
            documents.append(
                knowledge_pb2.NewDocument(
                    filename=document.filename or "",
                    content_type=document.content_type,
                    text=document.text or "",
                    metadata_json=json.dumps(document.metadata).encode(),
                )
            )
    reply = await clients.call(
        clients.knowledge.AddDocuments,
        knowledge_pb2.AddDocumentsRequest(
            tenant_id=tenant, knowledge_base_id=ref.knowledge_base_id, documents=documents
        ),
    )
    request.state.audit_object_id = ref.knowledge_base_id
    return DocumentList(documents=[_document(d) for d in reply.documents])


@router.get("/{kb_id}/documents", summary="List a knowledge base's documents and their status")
async def list_documents(
    kb_id: str, clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> DocumentList:
    guard.require(caller, "read_knowledge")
    reply = await clients.call(clients.knowledge.ListDocuments, _ref(tenant, kb_id))
    return DocumentList(documents=[_document(d) for d in reply.documents])


@router.delete(
    "/{kb_id}/documents/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a document and its chunks",
)
async def delete_document(
    kb_id: str, document_id: str, clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> None:
    guard.require(caller, "write_knowledge")
    await clients.call(
        clients.knowledge.DeleteDocument,
        knowledge_pb2.DocumentRef(
            tenant_id=tenant,
            knowledge_base_id=checked_id(kb_id, "knowledge base"),
            document_id=checked_id(document_id, "document"),
        ),
    )


@router.post("/{kb_id}/retrieve", summary="The chunks most similar to a query")
async def retrieve(
    kb_id: str, body: RetrieveIn, clients: Clients, tenant: Tenant, caller: Caller, guard: Guard
) -> RetrieveOut:
    guard.require(caller, "read_knowledge")
    request = knowledge_pb2.RetrieveRequest(
        tenant_id=tenant,
        knowledge_base_id=checked_id(kb_id, "knowledge base"),
        query=body.query,
        top_k=body.top_k,
        filters_json=json.dumps(body.filters).encode(),
    )
    if body.score_threshold is not None:
        request.score_threshold = body.score_threshold
    reply = await clients.call(clients.knowledge.Retrieve, request)
    return RetrieveOut(chunks=json.loads(reply.chunks_json or b"[]"))


def _knowledge_frame(event: dict[str, Any]) -> bytes:
    # No `id:`: the stream is live only (the documents' status is the record to catch up on).
    return f"event: {event['type']}\ndata: {jsonutil.dumps_str(event)}\n\n".encode()


async def _knowledge_sse(
    first: dict[str, Any], events: AsyncGenerator[dict[str, Any], None], heartbeat_s: float
) -> AsyncIterator[bytes]:
    yield RETRY
    yield _knowledge_frame(first)
    try:
        async for event in with_heartbeat(events, heartbeat_s):
            yield b": ping\n\n" if event is None else _knowledge_frame(event)
    except DeadlineExceeded:
        return
    except HeddleError as error:
        data = jsonutil.dumps_str(error_body(**error.to_dict()))
        yield f"event: error\ndata: {data}\n\n".encode()


@router.get(
    "/{kb_id}/events",
    summary="Ingestion progress as Server-Sent Events",
    description="Live `knowledge.document.*` events of the base's documents: `queued`, "
    "`ingesting`, `chunked` (chunks), `embedded` (embedded of chunks, after each batch), "
    "`ingested`, `retrying` and `failed` (error naming the file). The first frame, "
    "`knowledge.stream.opened`, says the stream is subscribed; events before it are not "
    "replayed (the documents' status tells where each is).",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`event`/`data`"}},
)
async def stream_knowledge_events(
    kb_id: str,
    request: Request,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
    access_token: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="The credential, for clients (EventSource) that cannot send headers.",
        ),
    ] = None,
) -> Response:
    guard.require(caller, "read_knowledge")
    events = clients.stream_knowledge_events(tenant, checked_id(kb_id, "knowledge base"))
    try:
        # Read first: an unknown base is a 404, not an error inside a 200 stream.
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise
    return StreamingResponse(
        _knowledge_sse(first, events, get_settings(request).sse_heartbeat_s),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )
