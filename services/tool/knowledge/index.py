"""Vector indexes behind one interface: embedded (numpy over SQLite) and Chroma (a server).

A collection holds one knowledge base's chunks: an id, the unit-length vector, the text and
flat metadata (str/int/float/bool values; ``document_id`` always among them). ``query``
returns the ``top_k`` best by cosine similarity, at least ``score_threshold``, among the
chunks whose metadata match ``filters`` — ``{"key": value}`` is equality, ``{"key": [a, b]}``
is membership, several keys must all match.

Why two: the embedded mode runs no server, so its index is a SQLite file and a brute-force
matrix product in numpy (exact, and ~10 ms over 100k chunks of 512 floats on this machine,
bench/knowledge.py); production uses Chroma, a vector engine running as its own server
(``chroma run``; HNSW, so it keeps its latency flat past millions of chunks and is shared by
every tool replica). PostgreSQL's pgvector would have been the first choice (one less
system), but Debian 12 does not package it for PostgreSQL 15.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from libs.common.errors import InvalidArgument

MetadataValue = str | int | float | bool
Filters = dict[str, MetadataValue | list[MetadataValue]]


@dataclass
class IndexedChunk:
    id: str
    vector: Sequence[float] | np.ndarray
    text: str
    metadata: dict[str, MetadataValue] = field(default_factory=dict)


@dataclass
class Hit:
    id: str
    score: float
    text: str
    metadata: dict[str, MetadataValue]


def check_filters(filters: Filters | None) -> Filters:
    """Filters as given, or an InvalidArgument that names the bad key."""
    filters = filters or {}
    if not isinstance(filters, dict):
        raise InvalidArgument("filters must be an object of metadata key -> value or list")
    for key, value in filters.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str | int | float | bool) for v in values):
            raise InvalidArgument(
                f"filters.{key}: a string, number or boolean, or a non-empty list of them",
                [{"path": f"filters.{key}", "message": "invalid filter value"}],
            )
    return filters


def _matches(metadata: dict[str, Any], filters: Filters) -> bool:
    for key, wanted in filters.items():
        if isinstance(wanted, list):
            if metadata.get(key) not in wanted:
                return False
        elif metadata.get(key) != wanted:
            return False
    return True


class VectorIndex(ABC):
    """What knowledge bases need of a vector store (see the module's docstring)."""

    kind: str = ""

    @abstractmethod
    async def upsert(self, collection: str, chunks: Sequence[IndexedChunk]) -> None: ...

    @abstractmethod
    async def query(
        self,
        collection: str,
        vector: Sequence[float] | np.ndarray,
        *,
        top_k: int = 5,
        score_threshold: float | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]: ...

    @abstractmethod
    async def delete_document(self, collection: str, document_id: str) -> None: ...

    @abstractmethod
    async def count(self, collection: str, document_id: str | None = None) -> int: ...

    @abstractmethod
    async def drop(self, collection: str) -> None: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass


class _Matrix:
    """One collection's vectors in memory, rebuilt from SQLite after a write."""

    def __init__(
        self, ids: list[str], vectors: np.ndarray, texts: list[str], metadata: list[dict[str, Any]]
    ) -> None:
        self.ids = ids
        self.vectors = vectors
        self.texts = texts
        self.metadata = metadata


class EmbeddedIndex(VectorIndex):
    """Exact cosine search in numpy over vectors kept in a SQLite file (no server).

    SQLite calls run in a worker thread (one connection, a lock): the event loop never
    blocks on the file. A collection's matrix is loaded on its first query after a write.
    """

    kind = "embedded"

    def __init__(self, path: str | Path = ":memory:") -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (collection TEXT NOT NULL, id TEXT NOT NULL,"
            " document_id TEXT NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL,"
            " vector BLOB NOT NULL, PRIMARY KEY (collection, id))"
        )
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS vectors_document ON vectors (collection, document_id)"
        )
        self._db.commit()
        self._lock = threading.Lock()
        self._cache: dict[str, _Matrix] = {}

    def _run(
        self, sql: str, rows: Sequence[Sequence[Any]] | Sequence[Any] = (), many: bool = False
    ) -> list[Any]:
        with self._lock:
            if many:
                self._db.executemany(sql, rows)
                self._db.commit()
                return []
            result = self._db.execute(sql, rows).fetchall()
            self._db.commit()
            return result

    async def upsert(self, collection: str, chunks: Sequence[IndexedChunk]) -> None:
        rows = [
            (
                collection,
                chunk.id,
                str(chunk.metadata.get("document_id", "")),
                chunk.text,
                json.dumps(chunk.metadata),
                np.asarray(chunk.vector, dtype=np.float32).tobytes(),
            )
            for chunk in chunks
        ]
        await asyncio.to_thread(
            self._run, "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?, ?)", rows, True
        )
        self._cache.pop(collection, None)

    def _load(self, collection: str) -> _Matrix:
        rows = self._run(
            "SELECT id, text, metadata, vector FROM vectors WHERE collection = ? ORDER BY rowid",
            (collection,),
        )
        if not rows:
            return _Matrix([], np.zeros((0, 0), dtype=np.float32), [], [])
        vectors = np.frombuffer(b"".join(row[3] for row in rows), dtype=np.float32)
        return _Matrix(
            [row[0] for row in rows],
            vectors.reshape(len(rows), -1),
            [row[1] for row in rows],
            [json.loads(row[2]) for row in rows],
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
        filters = check_filters(filters)
        matrix = self._cache.get(collection)
        if matrix is None:
            matrix = await asyncio.to_thread(self._load, collection)
            self._cache[collection] = matrix
        if not matrix.ids or top_k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32)
        if query.shape != (matrix.vectors.shape[1],):
            raise InvalidArgument(
                f"query vector has {query.size} dimensions, "
                f"the collection {matrix.vectors.shape[1]}"
            )
        scores = matrix.vectors @ query
        if filters:
            mask = np.fromiter(
                (_matches(m, filters) for m in matrix.metadata), dtype=bool, count=len(matrix.ids)
            )
            scores = np.where(mask, scores, -np.inf)
        k = min(top_k, len(scores))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        hits = []
        for row in best:
            score = float(scores[row])
            if score == -np.inf or (score_threshold is not None and score < score_threshold):
                continue
            hits.append(Hit(matrix.ids[row], score, matrix.texts[row], matrix.metadata[row]))
        return hits

    async def delete_document(self, collection: str, document_id: str) -> None:
        await asyncio.to_thread(
            self._run,
            "DELETE FROM vectors WHERE collection = ? AND document_id = ?",
            (collection, document_id),
        )
        self._cache.pop(collection, None)

    async def count(self, collection: str, document_id: str | None = None) -> int:
        if document_id is None:
            rows = await asyncio.to_thread(
                self._run, "SELECT count(*) FROM vectors WHERE collection = ?", (collection,)
            )
        else:
            rows = await asyncio.to_thread(
                self._run,
                "SELECT count(*) FROM vectors WHERE collection = ? AND document_id = ?",
                (collection, document_id),
            )
        return int(rows[0][0])

    async def drop(self, collection: str) -> None:
        await asyncio.to_thread(
            self._run, "DELETE FROM vectors WHERE collection = ?", (collection,)
        )
        self._cache.pop(collection, None)

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()
