"""JSON encoding for the wire: dynamic values travel as UTF-8 JSON bytes inside protobufs."""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _fallback(value: Any) -> Any:
    # Sets, decimals, custom objects: never fail a node because its output is unusual.
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def dumps(value: Any) -> bytes:
    """Encode value as compact JSON bytes; None encodes to b"" (an empty proto field)."""
    if value is None:
        return b""
    return orjson.dumps(value, default=_fallback, option=_OPTIONS)


def loads(data: bytes | str | None) -> Any:
    """Decode JSON bytes; empty input decodes to None."""
    if not data:
        return None
    return orjson.loads(data)


def dumps_str(value: Any) -> str:
    """Encode value as a JSON string (for SSE frames and logs)."""
    return orjson.dumps(value, default=_fallback, option=_OPTIONS).decode()
