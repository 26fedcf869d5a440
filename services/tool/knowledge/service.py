"""Knowledge bases of a tenant: create, list, delete; documents queued, ingested in the
background (chunk, embed with the base's model, index), listed and deleted; retrieval.

Ingestion publishes its progress on the broker (exchange ``heddle.events``, the event type as
routing key): ``knowledge.document.queued``, ``.ingesting``, ``.chunked`` (chunks: n),
``.embedded`` (embedded: k of chunks: n, after each batch), ``.ingested``, ``.retrying`` and
``.failed`` (error naming the file). ``events()`` follows one base's, from whichever replica
ingests (the gateway's SSE route).

Why the tool service owns knowledge: retrieval is what agents call as the
``knowledge_search`` tool, and the ``retrieve`` node calls the same tool, so the index and
its readers live in one place; ingestion is a background loop beside them (any tool replica
takes pending documents; a claim is a conditional update, so each is ingested once, and one
left ``ingesting`` by a crashed replica is taken again after ``stale_after_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from prometheus_client import Counter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import jsonutil
from libs.common.artifacts import ArtifactRef, ArtifactStore, read_bytes
from libs.common.bus import EVENTS_EXCHANGE, EventBus, Message
from libs.common.db import utcnow
from libs.common.errors import (
    Conflict,
    DeadlineExceeded,
    HeddleError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.tool.knowledge import repository
from services.tool.knowledge.chunking import ChunkOptions
from services.tool.knowledge.index import Filters, MetadataValue, VectorIndex, check_filters
from services.tool.knowledge.ingest import Knowledge, SourceDocument
from services.tool.knowledge.models import KnowledgeBaseRow, KnowledgeDocumentRow

log = logging.getLogger(__name__)

INGESTED = Counter(
    "heddle_knowledge_documents_total", "Documents ingested, by outcome.", ["outcome"]
)
CHUNKS = Counter("heddle_knowledge_chunks_total", "Chunks embedded and indexed.")

#: (model, texts) -> vectors: the ai service's Embed.
EmbedModel = Callable[[str, list[str]], Awaitable[Sequence[Sequence[float]]]]
Progress = Callable[[dict[str, Any]], Awaitable[None]]

MAX_DOCUMENTS_PER_CALL = 500
#: Attempts of a document whose embedding failed for a transient reason (ai or the index
#: down, rate limited) before it is marked failed.
MAX_INGEST_ATTEMPTS = 3
_TRANSIENT = (Unavailable, DeadlineExceeded, ResourceExhausted)
MAX_TEXT_CHARS = 5_000_000


@dataclass
class NewDocument:
    filename: str
    content_type: str = ""
    text: str | None = None
    artifact: dict[str, Any] | None = None
    file_id: str = ""
    metadata: dict[str, MetadataValue] | None = None


def base_view(row: KnowledgeBaseRow, counts: dict[str, tuple[int, int]]) -> dict[str, Any]:
    return {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "name": row.name,
        "description": row.description,
        "embedding_model": row.embedding_model,
        "chunk_size": row.chunk_size,
        "chunk_overlap": row.chunk_overlap,
        "documents": sum(n for n, _ in counts.values()),
        "documents_ingested": counts.get("ingested", (0, 0))[0],
        "documents_failed": counts.get("failed", (0, 0))[0],
        "chunks": counts.get("ingested", (0, 0))[1],
        "created_at": row.created_at.isoformat(),
    }


def document_view(row: KnowledgeDocumentRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "knowledge_base_id": row.knowledge_base_id,
        "filename": row.filename,
        "content_type": row.content_type,
        "file_id": row.file_id,
        "status": row.status,
        "chunks": row.chunks,
        "error": row.error,
        "metadata": row.doc_metadata or {},
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def _bad(path: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{path}: {message}", [{"path": path, "message": message}])


def _check_metadata(path: str, metadata: Any) -> dict[str, MetadataValue]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise _bad(path, "an object of key -> string, number or boolean")
    for key, value in metadata.items():
        if key in ("document_id", "source", "position", "start", "end", "page", "heading"):
            raise _bad(f"{path}.{key}", "a reserved key (set by ingestion)")
        if not isinstance(value, str | int | float | bool):
            raise _bad(f"{path}.{key}", "a string, number or boolean")
    return metadata


class KnowledgeManager:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        index: VectorIndex,
        embed: EmbedModel,
        artifacts: ArtifactStore | None = None,
        *,
        batch_size: int = 64,
        claim_size: int = 8,
        stale_after_s: float = 300.0,
        progress: Progress | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.sessions = sessions
        self.index = index
        self.embed = embed
        self.artifacts = artifacts
        self.batch_size = batch_size
        self.claim_size = claim_size
        self.stale_after_s = stale_after_s
        self.progress = progress
        self.bus = bus
        self.wake = asyncio.Event()

    # ------------------------------------------------------------------ bases

    async def _base(self, session: AsyncSession, tenant: str, ref: str) -> KnowledgeBaseRow:
        row = await repository.get_base(session, tenant, ref) if ref else None
        if row is None:
            raise NotFound(f"knowledge base {ref!r} not found", {"knowledge_base": ref})
        return row

    async def create_base(
        self,
        tenant: str,
        name: str,
        *,
        description: str = "",
        embedding_model: str = "",
        chunk_size: int = 0,
        chunk_overlap: int = 0,
    ) -> dict[str, Any]:
        name = name.strip()
        if not name or len(name) > 200:
            raise _bad("name", "between 1 and 200 characters")
        options = ChunkOptions(
            size=chunk_size or 800, overlap=chunk_overlap if chunk_size else (chunk_overlap or 100)
        )
        row = KnowledgeBaseRow(
            id=str(uuid.uuid4()),
            tenant_id=tenant,
            name=name,
            description=description,
            embedding_model=embedding_model,
            chunk_size=options.size,
            chunk_overlap=options.overlap,
            created_at=utcnow(),
        )
        try:
            async with self.sessions.begin() as session:
                if await repository.base_by_name(session, tenant, name) is not None:
                    raise Conflict(f"a knowledge base named {name!r} exists", {"name": name})
                session.add(row)
        except IntegrityError as error:
            raise Conflict(f"a knowledge base named {name!r} exists", {"name": name}) from error
        return base_view(row, {})

    async def list_bases(self, tenant: str) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            rows = await repository.list_bases(session, tenant)
            counts = await repository.document_counts(session, [r.id for r in rows])
        return [base_view(row, counts.get(row.id, {})) for row in rows]

    async def get_base(self, tenant: str, ref: str) -> dict[str, Any]:
        async with self.sessions() as session:
            row = await self._base(session, tenant, ref)
            counts = await repository.document_counts(session, [row.id])
        return base_view(row, counts.get(row.id, {}))

    async def delete_base(self, tenant: str, ref: str) -> None:
        async with self.sessions.begin() as session:
            row = await self._base(session, tenant, ref)
            await repository.delete_base(session, row.id)
        await self.index.drop(row.id)

    # ------------------------------------------------------------------ documents

    async def add_documents(
        self, tenant: str, ref: str, documents: Sequence[NewDocument]
    ) -> list[dict[str, Any]]:
        if not documents:
            raise _bad("documents", "at least one document")
        if len(documents) > MAX_DOCUMENTS_PER_CALL:
            raise _bad("documents", f"at most {MAX_DOCUMENTS_PER_CALL} per call")
        rows = []
        now = utcnow()
        for number, document in enumerate(documents):
            path = f"documents[{number}]"
            if not document.filename.strip() or len(document.filename) > 255:
                raise _bad(f"{path}.filename", "between 1 and 255 characters")
            if (document.text is None) == (document.artifact is None):
                raise _bad(path, "exactly one of text or a file")
            if document.text is not None and len(document.text) > MAX_TEXT_CHARS:
                raise _bad(f"{path}.text", f"at most {MAX_TEXT_CHARS} characters")
            if document.artifact is not None and ArtifactRef.from_json(document.artifact) is None:
                raise _bad(f"{path}.artifact", "not an artifact reference")
            rows.append(
                KnowledgeDocumentRow(
                    id=str(uuid.uuid4()),
                    tenant_id=tenant,
                    filename=document.filename,
                    content_type=document.content_type,
                    file_id=document.file_id,
                    text=document.text,
                    artifact=document.artifact,
                    doc_metadata=_check_metadata(f"{path}.metadata", document.metadata),
                    status="pending",
                    chunks=0,
                    error="",
                    attempts=0,
                    created_at=now + dt.timedelta(microseconds=number),
                    updated_at=now,
                )
            )
        async with self.sessions.begin() as session:
            base = await self._base(session, tenant, ref)
            for row in rows:
                row.knowledge_base_id = base.id
                session.add(row)
        self.wake.set()
        for row in rows:
            await self._emit("queued", base, row)
        return [document_view(row) for row in rows]

    async def list_documents(self, tenant: str, ref: str) -> list[dict[str, Any]]:
        async with self.sessions() as session:
            base = await self._base(session, tenant, ref)
            rows = await repository.list_documents(session, base.id)
        return [document_view(row) for row in rows]

    async def delete_document(self, tenant: str, ref: str, document_id: str) -> None:
        async with self.sessions.begin() as session:
            base = await self._base(session, tenant, ref)
            row = await repository.get_document(session, base.id, document_id)
            if row is None:
                raise NotFound(f"document {document_id!r} not found", {"document": document_id})
            await repository.delete_document(session, row.id)
        await self.index.delete_document(base.id, document_id)

    # ------------------------------------------------------------------ retrieval

    async def retrieve(
        self,
        tenant: str,
        ref: str,
        query: str,
        *,
        top_k: int = 5,
        score_threshold: float | None = None,
        filters: Filters | None = None,
    ) -> list[dict[str, Any]]:
        filters = check_filters(filters)
        async with self.sessions() as session:
            base = await self._base(session, tenant, ref)
        knowledge = Knowledge(self.index, partial(self.embed, base.embedding_model))
        hits = await knowledge.retrieve(
            base.id, query, top_k=top_k, score_threshold=score_threshold, filters=filters
        )
        return [hit.to_dict() for hit in hits]

    # ------------------------------------------------------------------ ingestion

    async def ingest_pending(self) -> int:
        """One round of the background loop: claim pending documents and ingest them."""
        stale = utcnow() - dt.timedelta(seconds=self.stale_after_s)
        async with self.sessions.begin() as session:
            claimed = await repository.claim_pending(session, self.claim_size, stale)
            bases = {
                row.knowledge_base_id: await session.get(KnowledgeBaseRow, row.knowledge_base_id)
                for row in claimed
            }
        for row in claimed:
            base = bases.get(row.knowledge_base_id)
            if base is not None:
                await self._ingest(base, row)
        if len(claimed) == self.claim_size:
            self.wake.set()  # there may be more (a document put back waits for the interval)
        return len(claimed)

    async def _content(self, row: KnowledgeDocumentRow) -> bytes | str:
        if row.text is not None:
            return row.text
        ref = ArtifactRef.from_json(row.artifact)
        if ref is None or self.artifacts is None:
            raise InvalidArgument(f"{row.filename}: no content")
        return await read_bytes(self.artifacts, ref)

    async def _ingest(self, base: KnowledgeBaseRow, row: KnowledgeDocumentRow) -> None:
        knowledge = Knowledge(
            self.index, partial(self.embed, base.embedding_model), batch_size=self.batch_size
        )

        async def step(stage: str, done: int, total: int) -> None:
            if stage == "chunked":
                await self._emit("chunked", base, row, chunks=total)
            else:
                await self._emit("embedded", base, row, chunks=total, embedded=done)

        await self._emit("ingesting", base, row)
        try:
            data = await self._content(row)
            outcome = await knowledge.ingest_document(
                base.id,
                SourceDocument(
                    id=row.id,
                    filename=row.filename,
                    data=data,
                    content_type=row.content_type,
                    metadata=dict(row.doc_metadata or {}),
                ),
                ChunkOptions(base.chunk_size, base.chunk_overlap),
                on_step=step,
            )
            status, chunks, error = outcome.status, outcome.chunks, outcome.error
        except _TRANSIENT as failure:
            if row.attempts + 1 < MAX_INGEST_ATTEMPTS:
                # Taken again by a later round (the claim counted the attempt).
                log.warning("knowledge document retried", extra={"error": failure.message})
                async with self.sessions.begin() as session:
                    await repository.finish_document(
                        session, row.id, status="pending", chunks=0, error=failure.message
                    )
                await self._emit("retrying", base, row, error=f"{row.filename}: {failure.message}")
                return
            status, chunks, error = "failed", 0, f"{row.filename}: {failure.message}"
        except HeddleError as failure:
            # A document that cannot be read or embedded fails alone, with the reason.
            status, chunks, error = "failed", 0, f"{row.filename}: {failure.message}"
        INGESTED.labels(status).inc()
        CHUNKS.inc(chunks)
        async with self.sessions.begin() as session:
            kept = await repository.finish_document(
                session, row.id, status=status, chunks=chunks, error=error
            )
        if not kept:  # deleted while it was being ingested: drop what was indexed
            await self.index.delete_document(base.id, row.id)
            return
        log.info(
            "knowledge document %s",
            status,
            extra={
                "knowledge_base_id": base.id,
                "document_id": row.id,
                "document": row.filename,
                "chunks": chunks,
                "error": error,
            },
        )
        await self._emit(status, base, row, chunks=chunks, error=error)

    async def _emit(
        self,
        stage: str,
        base: KnowledgeBaseRow,
        row: KnowledgeDocumentRow,
        *,
        chunks: int = 0,
        embedded: int = 0,
        error: str = "",
    ) -> None:
        """Publish one progress event; a broker that is away costs the event, not the
        ingestion (the document's status in the database is the record)."""
        kind = "knowledge.document." + stage
        event = {
            "type": kind,
            "tenant_id": base.tenant_id,
            "knowledge_base_id": base.id,
            "document_id": row.id,
            "filename": row.filename,
            "chunks": chunks,
            "embedded": embedded,
            "error": error,
            "at": utcnow().isoformat(),
        }
        if self.progress is not None:
            await self.progress(event)
        if self.bus is None:
            return
        try:
            await self.bus.publish(EVENTS_EXCHANGE, kind, jsonutil.dumps(event))
        except Exception:
            log.warning("knowledge progress event not published", exc_info=True)

    async def events(self, tenant: str, ref: str) -> AsyncIterator[dict[str, Any]]:
        """The base's progress events from now on (first `knowledge.stream.opened`, once
        subscribed: what the caller does after it is seen is followed); NotFound for an
        unknown base (or another tenant's)."""
        async with self.sessions() as session:
            base = await self._base(session, tenant, ref)
        if self.bus is None:
            raise Unavailable("knowledge events need the broker (no bus configured)")
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)

        async def on_message(message: Message) -> None:
            event = jsonutil.loads(message.body)
            if event.get("knowledge_base_id") == base.id and event.get("tenant_id") == tenant:
                with contextlib.suppress(asyncio.QueueFull):  # a reader that stopped reading
                    queue.put_nowait(event)

        subscription = await self.bus.subscribe(
            EVENTS_EXCHANGE, ["knowledge.document.*"], on_message
        )
        try:
            yield {
                "type": "knowledge.stream.opened",
                "tenant_id": tenant,
                "knowledge_base_id": base.id,
                "at": utcnow().isoformat(),
            }
            while True:
                yield await queue.get()
        finally:
            await subscription.cancel()
