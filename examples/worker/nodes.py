"""Three custom node types served by a worker (README: "Bring your own code").

heddle worker examples/worker/nodes.py --api-key <key printed by heddle serve>
"""

from __future__ import annotations

import csv
import io
import re
import statistics
import unicodedata
from collections import Counter
from typing import Annotated

from heddle_sdk import Context, NodeError, node_type
from pydantic import BaseModel, Field


class Slug(BaseModel):
    slug: str


@node_type("acme.slugify", title="Slugify", category="text", version="1")
def slugify(text: str, separator: str = "-", max_length: Annotated[int, Field(ge=1)] = 80) -> Slug:
    """Turn a title into a URL slug: ASCII, lower case, words joined by a separator."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    if not words:
        raise NodeError(f"nothing to slugify in {text!r}", retryable=False, type="EmptySlug")
    return Slug(slug=separator.join(words)[:max_length].strip(separator))


class WordCount(BaseModel):
    words: int
    characters: int
    top: list[tuple[str, int]] = Field(description="The most frequent words, with counts.")


@node_type("acme.word_count", title="Word count", category="text")
async def word_count(
    text: str, ctx: Context, top: Annotated[int, Field(ge=0, le=50)] = 3
) -> WordCount:
    """Count the words of a text and name the most frequent ones."""
    words = re.findall(r"\w+", text.lower())
    ctx.log.info("counted words", words=len(words))
    return WordCount(words=len(words), characters=len(text), top=Counter(words).most_common(top))


class ColumnStats(BaseModel):
    rows: int
    columns: list[str]
    sum: float
    mean: float
    min: float
    max: float


@node_type("acme.csv_stats", title="CSV column stats", category="data")
def csv_stats(csv_text: str, column: str, ctx: Context) -> ColumnStats:
    """Parse CSV text (with a header row) and summarise one numeric column."""
    reader = csv.DictReader(io.StringIO(csv_text))
    columns = list(reader.fieldnames or [])
    if column not in columns:
        raise NodeError(
            f"no column {column!r}; the CSV has {columns}", retryable=False, type="NoSuchColumn"
        )
    values: list[float] = []
    for number, row in enumerate(reader, start=2):
        if ctx.cancelled:  # a plain def runs in a thread: cancellation is a flag
            raise NodeError("cancelled", retryable=False)
        try:
            values.append(float(row[column]))
        except (TypeError, ValueError):
            ctx.log.warning("skipped a row that is not a number", line=number)
        if number % 1000 == 0:
            ctx.heartbeat(message=f"{number} rows read")
    if not values:
        raise NodeError(f"column {column!r} has no numbers", retryable=False)
    return ColumnStats(
        rows=len(values),
        columns=columns,
        sum=sum(values),
        mean=statistics.fmean(values),
        min=min(values),
        max=max(values),
    )
