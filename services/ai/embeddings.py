"""The offline embedder, served by the ``echo`` provider's Embed (the OpenAI-compatible
``/embeddings`` is ``OpenAIProvider.embed``).

The offline embedder needs no model and no network, and gives the same
vector for the same text on every machine: each text becomes sparse features — its words
(lower-cased, stop words dropped), word bigrams and the character trigrams of each word —,
each feature is hashed (CRC-32, not Python's salted ``hash``) to one of ``dim`` buckets with a
sign, weighted by ``1 + log(tf)`` and the feature kind, and the vector is L2-normalised. Two
texts sharing rare words (names, numbers, codes) get a high cosine, which is what lexical
questions over documents need; it knows no synonyms (a real model does: the
``openai``-compatible provider serves OpenAI, vLLM, Ollama and TEI).
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

DEFAULT_DIM = 512
_WORD = re.compile(r"[\w][\w\-]*", re.UNICODE)
# The words that say nothing of what a passage is about; questions are full of them.
STOP_WORDS = frozenset(
    """a an and are as at be by can did do does for from has have how in is it its of on or
    that the their there these this to was were what when where which who whom whose why
    will with you your i we our they them he she his her not no yes""".split()  # noqa: SIM905
)
_WEIGHTS = {"w": 1.0, "b": 0.7, "c": 0.25}
#: How much more a name, code or number counts than an ordinary word (no corpus statistics,
#: so no IDF: capitalised words inside a sentence, words with digits and acronyms stand in).
NAME_BOOST = 3.0


def _is_name(word: str) -> bool:
    """Names, codes and numbers: what tells one passage from another most."""
    return (
        any(c.isdigit() for c in word)
        or (word[0].isupper() and not word.isupper())
        or (len(word) > 1 and word.isupper())
    )


def _features(text: str) -> tuple[Counter[str], set[str]]:
    raw = [m.group(0) for m in _WORD.finditer(text)]
    names = {w.lower() for w in raw if _is_name(w)}
    words = [w for w in (r.lower() for r in raw) if w not in STOP_WORDS]
    features: Counter[str] = Counter()
    for word in words:
        features["w:" + word] += 1
        padded = f"<{word}>"
        for i in range(len(padded) - 2):
            features["c:" + padded[i : i + 3]] += 1
    for first, second in itertools.pairwise(words):
        features[f"b:{first} {second}"] += 1
    return features, names


class HashEmbedder:
    """Deterministic, offline text embeddings (see the module's docstring)."""

    kind = "hash"

    def __init__(self, dim: int = DEFAULT_DIM) -> None:
        if dim < 8:
            raise ValueError("dim must be at least 8")
        self.dim = dim

    def embed_one(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        features, names = _features(text)
        for feature, count in features.items():
            code = zlib.crc32(feature.encode("utf-8"))
            sign = 1.0 if code & 1 else -1.0
            weight = _WEIGHTS[feature[0]] * (1 + math.log(count))
            if feature[0] == "w" and feature[2:] in names:
                weight *= NAME_BOOST
            vector[(code >> 1) % self.dim] += sign * weight
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, float32, unit length (zero for a text without words)."""
        matrix = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            matrix[row] = self.embed_one(text)
        return matrix
