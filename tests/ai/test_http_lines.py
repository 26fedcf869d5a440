"""iter_lines: a streamed body's lines, wherever the chunks break (aiohttp gives chunks as
they arrive; httpx's aiter_lines split them before the switch)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.ai.providers.base import iter_lines, iter_sse

BODY = 'data: {"a": "\u00e9\u2028x"}\r\n\r\nevent: ping\rdata: 1\n\ndata: [DONE]\n\ndata: tail'


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
async def test_lines_do_not_depend_on_chunk_boundaries(size: int) -> None:
    lines = [line async for line in iter_lines(_chunks(BODY.encode(), size))]
    # \u2028 is no line break of HTTP: str.splitlines would have split there.
    assert lines == [
        'data: {"a": "\u00e9\u2028x"}',
        "",
        "event: ping",
        "data: 1",
        "",
        "data: [DONE]",
        "",
        "data: tail",
    ]


async def test_sse_events_from_split_chunks() -> None:
    events = [e async for e in iter_sse(iter_lines(_chunks(BODY.encode(), 2)))]
    assert events == [
        ("message", '{"a": "\u00e9\u2028x"}'),
        ("ping", "1"),
        ("message", "[DONE]"),
        ("message", "tail"),
    ]
