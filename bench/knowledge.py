"""Knowledge: ingest throughput (chunks/s) and retrieve latency (p50/p99) at 10k and 100k
chunks, on the embedded index (numpy over SQLite) and on Chroma (a real `chroma run`).

    .venv/bin/python bench/knowledge.py [--sizes 10000,100000] [--queries 200]

Chunks are generated sentences (~40 words, a unique code each) embedded by the offline
embedder (512 dimensions); embedding is timed apart from the index, which gets the same
vectors. A query embeds the question and searches top 5 (embedding included in the latency).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests" / "knowledge"))

from chroma_server import ChromaServer  # noqa: E402  (tests/knowledge: a `chroma run` process)
from engine import calibration_ms  # noqa: E402

from services.ai.embeddings import HashEmbedder  # noqa: E402
from services.tool.knowledge.chroma import ChromaIndex  # noqa: E402
from services.tool.knowledge.index import EmbeddedIndex, IndexedChunk, VectorIndex  # noqa: E402

WORDS = """latency throughput replica ledger invoice archive harbour ferry engine cluster shard
tenant quota backup region failover schedule cron webhook token budget report audit policy
window cache vector index chunk document page heading table column metric""".split()  # noqa: SIM905
SYLLABLES = "ka lo mi ve tor san quel bri dun fa gor hel ix jun mar nop os pra rul zet".split()  # noqa: SIM905


def codename(number: int) -> str:
    """A distinct made-up word per record (scrambled base-20 digits as syllables)."""
    number = (number * 2_654_435_761) % len(SYLLABLES) ** 5
    parts = []
    for _ in range(5):
        number, digit = divmod(number, len(SYLLABLES))
        parts.append(SYLLABLES[digit])
    return "".join(parts).capitalize()


def make_texts(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [
        f"Record {codename(i)}: " + " ".join(rng.choice(WORDS) for _ in range(40))
        for i in range(count)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_index(
    index: VectorIndex, texts: list[str], vectors: np.ndarray, queries: int, embedder: HashEmbedder
) -> tuple[float, float, float, float, float]:
    collection = f"bench-{len(texts)}"
    await index.drop(collection)
    batch = 1000
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        await index.upsert(
            collection,
            [
                IndexedChunk(f"c{i}", vectors[i], texts[i], {"document_id": f"d{i // 10}"})
                for i in range(start, min(start + batch, len(texts)))
            ],
        )
    ingest = len(texts) / (time.perf_counter() - started)
    # The first query loads the embedded index's matrix from SQLite: timed apart.
    began = time.perf_counter()
    await index.query(collection, embedder.embed_one("warm up"), top_k=5)
    first = (time.perf_counter() - began) * 1000
    rng = random.Random(3)
    latencies = []
    found = 0
    for _ in range(queries):
        target = rng.randrange(len(texts))
        question = f"What does record {codename(target)} say?"
        began = time.perf_counter()
        hits = await index.query(collection, embedder.embed_one(question), top_k=5)
        latencies.append((time.perf_counter() - began) * 1000)
        found += any(h.id == f"c{target}" for h in hits)
    await index.drop(collection)
    return (
        ingest,
        first,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        found / queries,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--indexes", default="embedded,chroma")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"calibration: {calibration_ms():.0f} ms (a fixed pure-Python loop; ~175 at full speed)")
    embedder = HashEmbedder()
    texts = make_texts(max(sizes))
    started = time.perf_counter()
    vectors = embedder.embed(texts)
    rate = len(texts) / (time.perf_counter() - started)
    print(f"offline embedder: {rate:,.0f} chunks/s ({len(texts):,} chunks, 512 dimensions)")
    server = ChromaServer()
    server.start()
    try:
        print(
            f"{'index':<9} {'chunks':>8} {'ingest chunks/s':>16} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'recall@5':>9} {'1st query ms':>13}"
        )
        for size in sizes:
            with tempfile.TemporaryDirectory() as folder:
                # Chroma's upserts of 1000 chunks take seconds on a loaded machine.
                chosen: dict[str, VectorIndex] = {
                    "embedded": EmbeddedIndex(Path(folder) / "vectors.sqlite"),
                    "chroma": ChromaIndex(server.url, timeout_s=300),
                }
                indexes = [chosen[name] for name in args.indexes.split(",")]
                for index in indexes:
                    ingest, first, p50, p99, recall = await run_index(
                        index, texts[:size], vectors[:size], args.queries, embedder
                    )
                    await index.aclose()
                    print(
                        f"{index.kind:<9} {size:>8,} {ingest:>16,.0f} {p50:>8.2f} {p99:>8.2f} "
                        f"{recall:>9.2f} {first:>13.1f}"
                    )
    finally:
        server.stop()
    print(f"calibration: {calibration_ms():.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
