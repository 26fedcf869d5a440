"""The production vector index: Chroma, a vector engine running as its own server.

It speaks Chroma's documented REST API (v2) over httpx rather than through the ``chromadb``
Python package: that package's async client has no request timeout, keeps its HTTP clients
in a class-level dict across instances, sends product telemetry by default and pulls in the
whole server (onnxruntime, kubernetes) — the server is a test and deployment dependency here,
not the tool service's. Every call has a deadline; transport errors and 5xx are Unavailable.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from libs.common.errors import InvalidArgument, NotFound, Unavailable
from services.tool.knowledge.index import Filters, Hit, IndexedChunk, VectorIndex, check_filters

_UNSAFE = re.compile(r"[^a-zA-Z0-9._-]")


def _where(filters: Filters) -> dict[str, Any] | None:
    clauses: list[dict[str, Any]] = [
        {key: {"$in": value} if isinstance(value, list) else {"$eq": value}}
        for key, value in filters.items()
    ]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


class ChromaIndex(VectorIndex):
    kind = "chroma"

    def __init__(
        self,
        url: str,
        *,
        tenant: str = "default_tenant",
        database: str = "default_database",
        prefix: str = "heddle",
        timeout_s: float = 30.0,
        token: str | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(
            base_url=f"{url.rstrip('/')}/api/v2/tenants/{tenant}/databases/{database}",
            timeout=timeout_s,
            headers=headers,
        )
        self._prefix = prefix
        self._ids: dict[str, str] = {}

    def _name(self, collection: str) -> str:
        return f"{self._prefix}-{_UNSAFE.sub('_', collection)}"

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = await self._client.request(method, path, json=body)
        except httpx.HTTPError as error:
            raise Unavailable(f"chroma: {type(error).__name__}: {error}") from error
        if response.status_code == 404:
            raise NotFound(f"chroma: {path} not found")
        if response.status_code >= 500:
            raise Unavailable(f"chroma: HTTP {response.status_code}: {response.text[:300]}")
        if response.status_code >= 400:
            raise InvalidArgument(f"chroma: HTTP {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    async def _collection(self, collection: str, *, create: bool) -> str | None:
        if collection in self._ids:
            return self._ids[collection]
        if create:
            body = {
                "name": self._name(collection),
                "get_or_create": True,
                "configuration": {"hnsw": {"space": "cosine"}},
            }
            found = await self._call("POST", "/collections", body)
        else:
            try:
                found = await self._call("GET", f"/collections/{self._name(collection)}")
            except NotFound:
                return None
        self._ids[collection] = found["id"]
        return str(found["id"])

    async def upsert(self, collection: str, chunks: Sequence[IndexedChunk]) -> None:
        if not chunks:
            return
        ident = await self._collection(collection, create=True)
        await self._call(
            "POST",
            f"/collections/{ident}/upsert",
            {
                "ids": [c.id for c in chunks],
                "embeddings": [np.asarray(c.vector, dtype=float).tolist() for c in chunks],
                "documents": [c.text for c in chunks],
                "metadatas": [c.metadata for c in chunks],
            },
        )

    async def query(
        self,
        collection: str,
        vector: Sequence[float] | np.ndarray,
        *,
        top_k: int = 5,
        score_threshold: float | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]:
        where = _where(check_filters(filters))
        ident = await self._collection(collection, create=False)
        if ident is None or top_k <= 0:
            return []
        body: dict[str, Any] = {
            "query_embeddings": [np.asarray(vector, dtype=float).tolist()],
            "n_results": top_k,
            "include": ["documents", "metadatas", "distances"],
        }
        if where:
            body["where"] = where
        found = await self._call("POST", f"/collections/{ident}/query", body)
        hits = []
        for cid, distance, text, meta in zip(
            found["ids"][0],
            found["distances"][0],
            found["documents"][0],
            found["metadatas"][0],
            strict=True,
        ):
            score = 1.0 - float(distance)  # cosine distance
            if score_threshold is not None and score < score_threshold:
                continue
            hits.append(Hit(cid, score, text or "", dict(meta or {})))
        return hits

    async def delete_document(self, collection: str, document_id: str) -> None:
        ident = await self._collection(collection, create=False)
        if ident is not None:
            await self._call(
                "POST", f"/collections/{ident}/delete", {"where": {"document_id": document_id}}
            )

    async def count(self, collection: str, document_id: str | None = None) -> int:
        ident = await self._collection(collection, create=False)
        if ident is None:
            return 0
        if document_id is None:
            return int(await self._call("GET", f"/collections/{ident}/count"))
        found = await self._call(
            "POST",
            f"/collections/{ident}/get",
            {"where": {"document_id": document_id}, "include": []},
        )
        return len(found["ids"])

    async def drop(self, collection: str) -> None:
        self._ids.pop(collection, None)
        with contextlib.suppress(NotFound):
            await self._call("DELETE", f"/collections/{self._name(collection)}")

    async def aclose(self) -> None:
        await self._client.aclose()
