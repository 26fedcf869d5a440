"""The ingest loop: a transient Embed failure (ai down) is retried, a lasting one fails the
document after MAX_INGEST_ATTEMPTS with the reason; a deleted document leaves no chunk."""

from __future__ import annotations

from pathlib import Path

from libs.common.db import create_engine, session_factory
from libs.common.errors import Unavailable
from libs.migrations import upgrade
from services.ai.embeddings import HashEmbedder
from services.tool.knowledge.index import EmbeddedIndex
from services.tool.knowledge.service import MAX_INGEST_ATTEMPTS, KnowledgeManager, NewDocument


async def test_transient_embed_failures_are_retried_then_fail(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'k.db'}")
    await upgrade(engine)
    index = EmbeddedIndex(tmp_path / "v.sqlite")
    outages = {"ok.md": 1, "down.md": 99}

    async def embed(model: str, texts: list[str]) -> list[list[float]]:
        for name in outages:
            if any(name in t for t in texts) and outages[name] > 0:
                outages[name] -= 1
                raise Unavailable("ai: connection refused")
        vectors: list[list[float]] = HashEmbedder().embed(texts).tolist()
        return vectors

    manager = KnowledgeManager(session_factory(engine), index, embed)
    base = await manager.create_base("t1", "kb")
    await manager.add_documents(
        "t1",
        base["id"],
        [NewDocument("ok.md", text="About ok.md here."), NewDocument("down.md", text="down.md")],
    )
    for _ in range(MAX_INGEST_ATTEMPTS):
        await manager.ingest_pending()
    documents = {d["filename"]: d for d in await manager.list_documents("t1", "kb")}
    assert documents["ok.md"]["status"] == "ingested" and documents["ok.md"]["chunks"] == 1
    assert documents["down.md"]["status"] == "failed"
    assert documents["down.md"]["error"] == "down.md: ai: connection refused"
    assert await manager.ingest_pending() == 0  # nothing left to take
    await manager.delete_document("t1", "kb", documents["ok.md"]["id"])
    assert await index.count(base["id"]) == 0
    await index.aclose()
    await engine.dispose()
