"""One contract over both vector indexes: the embedded one (numpy over SQLite) and Chroma
(a real ``chroma run`` server process)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from chroma_server import ChromaServer

from libs.common.errors import InvalidArgument
from services.tool.knowledge.chroma import ChromaIndex
from services.tool.knowledge.index import EmbeddedIndex, IndexedChunk, VectorIndex

DIM = 16


def _unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _chunks(document: str, seeds: range, **meta: str | int | bool) -> list[IndexedChunk]:
    return [
        IndexedChunk(
            f"{document}-{s}",
            _unit(s),
            f"text {s}",
            {"document_id": document, "position": s, **meta},
        )
        for s in seeds
    ]


@pytest.fixture(params=["embedded", "chroma"])
async def index(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[VectorIndex, str]]:
    if request.param == "embedded":
        store: VectorIndex = EmbeddedIndex(tmp_path / "vectors.sqlite")
    else:
        server: ChromaServer = request.getfixturevalue("chroma_server")
        store = ChromaIndex(server.url)
    collection = f"kb-{uuid.uuid4().hex[:8]}"
    try:
        yield store, collection
    finally:
        await store.drop(collection)
        await store.aclose()


async def test_nearest_first_with_scores(index: tuple[VectorIndex, str]) -> None:
    store, kb = index
    await store.upsert(kb, _chunks("a", range(10)) + _chunks("b", range(10, 20)))
    assert await store.count(kb) == 20
    hits = await store.query(kb, _unit(13), top_k=3)
    assert hits[0].id == "b-13"
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].text == "text 13"
    assert hits[0].metadata == {"document_id": "b", "position": 13}
    assert len(hits) == 3
    assert hits[0].score >= hits[1].score >= hits[2].score
    expected = sorted(range(20), key=lambda s: -float(_unit(s) @ _unit(13)))[:3]
    assert [h.metadata["position"] for h in hits] == expected


async def test_filters_equality_membership_and_threshold(index: tuple[VectorIndex, str]) -> None:
    store, kb = index
    await store.upsert(
        kb, _chunks("a", range(5), lang="en") + _chunks("b", range(5, 10), lang="fr")
    )
    hits = await store.query(kb, _unit(2), top_k=10, filters={"lang": "fr"})
    assert {h.metadata["document_id"] for h in hits} == {"b"} and len(hits) == 5
    hits = await store.query(kb, _unit(2), top_k=10, filters={"position": [1, 7]})
    assert sorted(h.id for h in hits) == ["a-1", "b-7"]
    hits = await store.query(kb, _unit(2), top_k=10, filters={"lang": "en", "position": [2, 7]})
    assert [h.id for h in hits] == ["a-2"]
    assert await store.query(kb, _unit(2), top_k=10, filters={"lang": "de"}) == []
    hits = await store.query(kb, _unit(2), top_k=10, score_threshold=0.99)
    assert [h.id for h in hits] == ["a-2"]
    with pytest.raises(InvalidArgument, match=r"filters\.lang"):
        await store.query(kb, _unit(2), filters={"lang": {"$ne": "x"}})  # type: ignore[dict-item]


async def test_upsert_replaces_and_delete_document_removes_its_chunks(
    index: tuple[VectorIndex, str],
) -> None:
    store, kb = index
    await store.upsert(kb, _chunks("a", range(4)) + _chunks("b", range(4, 8)))
    await store.upsert(kb, [IndexedChunk("a-0", _unit(100), "new text", {"document_id": "a"})])
    assert await store.count(kb) == 8
    hits = await store.query(kb, _unit(100), top_k=1)
    assert (hits[0].id, hits[0].text) == ("a-0", "new text")
    await store.delete_document(kb, "a")
    assert await store.count(kb, "a") == 0
    assert await store.count(kb, "b") == 4
    assert all(h.metadata["document_id"] == "b" for h in await store.query(kb, _unit(1), top_k=8))


async def test_unknown_collection_is_empty_and_drop_removes_all(
    index: tuple[VectorIndex, str],
) -> None:
    store, kb = index
    assert await store.query(kb, _unit(1)) == []
    assert await store.count(kb) == 0
    await store.upsert(kb, _chunks("a", range(3)))
    await store.drop(kb)
    assert await store.count(kb) == 0
    assert await store.query(kb, _unit(1)) == []
