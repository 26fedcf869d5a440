"""Ingestion and retrieval over one vector index: chunk, embed in batches, upsert, search.

Pure of transport: the embedder is any ``async (texts) -> vectors`` (the ai service's Embed
RPC in the tool service, the offline embedder in tests and the embedded mode), the index any
VectorIndex. A document that cannot be read fails alone, with an error naming its file; the
rest of the batch is ingested.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from libs.common.errors import HeddleError, InvalidArgument
from services.tool.knowledge.chunking import Chunk, ChunkOptions, Format, chunk_document
from services.tool.knowledge.index import Filters, IndexedChunk, MetadataValue, VectorIndex

log = logging.getLogger(__name__)

Embed = Callable[[list[str]], Awaitable[Sequence[Sequence[float]] | np.ndarray]]
Progress = Callable[["DocumentOutcome", int, int], Awaitable[None]]
#: (stage, done, total): ("chunked", n, n) once chunked, ("embedded", k, n) after each batch.
Step = Callable[[str, int, int], Awaitable[None]]

MAX_TOP_K = 100


@dataclass
class SourceDocument:
    id: str
    filename: str
    data: bytes | str
    content_type: str = ""
    format: Format | None = None
    metadata: dict[str, MetadataValue] = field(default_factory=dict)


@dataclass
class DocumentOutcome:
    document_id: str
    filename: str
    status: str  # "ingested" or "failed"
    chunks: int = 0
    error: str = ""


@dataclass
class RetrievedChunk:
    text: str
    score: float
    document_id: str
    source: str
    position: int
    location: dict[str, Any]
    metadata: dict[str, MetadataValue]

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "score": round(self.score, 6),
            "document_id": self.document_id,
            "source": self.source,
            "position": self.position,
            "location": self.location,
            "metadata": self.metadata,
            "citation": f"[{self.source}#{self.position}]",
        }


def chunk_id(document_id: str, position: int) -> str:
    return hashlib.sha256(f"{document_id}/{position}".encode()).hexdigest()[:32]


class Knowledge:
    """Ingest documents into, and retrieve chunks from, one vector index."""

    def __init__(self, index: VectorIndex, embed: Embed, *, batch_size: int = 64) -> None:
        self.index = index
        self.embed = embed
        self.batch_size = batch_size

    async def _embed(self, texts: list[str]) -> np.ndarray:
        vectors = np.asarray(await self.embed(texts), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1, norms)

    async def ingest_document(
        self,
        collection: str,
        document: SourceDocument,
        options: ChunkOptions,
        on_step: Step | None = None,
    ) -> DocumentOutcome:
        try:
            chunks = chunk_document(
                document.filename, document.data, document.format, options, document.content_type
            )
        except HeddleError as error:
            return DocumentOutcome(document.id, document.filename, "failed", error=error.message)
        if on_step is not None:
            await on_step("chunked", len(chunks), len(chunks))
        # A re-ingested document replaces its chunks; none of the old ones is left over.
        await self.index.delete_document(collection, document.id)
        for first in range(0, len(chunks), self.batch_size):
            batch = chunks[first : first + self.batch_size]
            vectors = await self._embed([c.text for c in batch])
            await self.index.upsert(
                collection,
                [
                    IndexedChunk(chunk_id(document.id, c.position), v, c.text, _meta(document, c))
                    for c, v in zip(batch, vectors, strict=True)
                ],
            )
            if on_step is not None:
                await on_step("embedded", first + len(batch), len(chunks))
        return DocumentOutcome(document.id, document.filename, "ingested", chunks=len(chunks))

    async def ingest(
        self,
        collection: str,
        documents: Sequence[SourceDocument],
        options: ChunkOptions | None = None,
        progress: Progress | None = None,
    ) -> list[DocumentOutcome]:
        options = options or ChunkOptions()
        outcomes = []
        for done, document in enumerate(documents, start=1):
            outcome = await self.ingest_document(collection, document, options)
            if outcome.status == "failed":
                log.warning("document not ingested", extra={"error": outcome.error})
            outcomes.append(outcome)
            if progress is not None:
                await progress(outcome, done, len(documents))
        return outcomes

    async def delete_document(self, collection: str, document_id: str) -> None:
        await self.index.delete_document(collection, document_id)

    async def retrieve(
        self,
        collection: str,
        query: str,
        *,
        top_k: int = 5,
        score_threshold: float | None = None,
        filters: Filters | None = None,
    ) -> list[RetrievedChunk]:
        if not query.strip():
            raise InvalidArgument(
                "query: must not be empty", [{"path": "query", "message": "empty"}]
            )
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(
                f"top_k: between 1 and {MAX_TOP_K}", [{"path": "top_k", "message": "out of range"}]
            )
        vector = (await self._embed([query]))[0]
        hits = await self.index.query(
            collection, vector, top_k=top_k, score_threshold=score_threshold, filters=filters
        )
        results = []
        for hit in hits:
            meta = dict(hit.metadata)
            location: dict[str, Any] = {
                k: meta.pop(k) for k in ("position", "start", "end", "page", "heading") if k in meta
            }
            results.append(
                RetrievedChunk(
                    text=hit.text,
                    score=hit.score,
                    document_id=str(meta.pop("document_id", "")),
                    source=str(meta.pop("source", "")),
                    position=int(location.get("position", 0)),
                    location=location,
                    metadata=meta,
                )
            )
        return results


def _meta(document: SourceDocument, chunk: Chunk) -> dict[str, MetadataValue]:
    meta: dict[str, MetadataValue] = {
        **document.metadata,
        "document_id": document.id,
        "source": document.filename,
    }
    meta.update(chunk.location())
    return meta
