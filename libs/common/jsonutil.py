"""JSON encoding for the wire: dynamic values travel as UTF-8 JSON bytes inside protobufs.

orjson is fast but holds integers to 64 bits: it refuses to encode a larger one and decodes
one as a float (rounded). JSON itself has no such limit, and a node may well produce
`2 ** 64`, so both directions fall back to the standard library's exact encoder and decoder
for such documents only: encoding tries orjson first and falls back on its 64-bit error;
decoding checks the bytes for a digit run long enough to overflow 64 bits (a translate and
two substring searches, both in C) before it trusts orjson's result.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

# orjson decodes integers in [-2**63, 2**64 - 1] exactly. Anything outside has at least 20
# digits, or is negative with at least 19: map digits to "0", "-" to itself, the rest to " ".
_DIGITS = bytes(
    b"0"[0] if byte in b"0123456789" else byte if byte == b"-"[0] else b" "[0]
    for byte in range(256)
)
_LONG_RUN = b"0" * 20
_LONG_NEGATIVE = b"-" + b"0" * 19
_SHORTEST_BIG = len(_LONG_NEGATIVE)


def _fallback(value: Any) -> Any:
    # Sets, decimals, custom objects: never fail a node because its output is unusual.
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _stdlib_default(value: Any) -> Any:
    # What orjson serializes natively but the standard library does not: datetimes, UUIDs,
    # dataclasses, numpy values. Round-trip them through orjson one value at a time.
    if isinstance(value, set | frozenset):
        return list(value)
    try:
        return orjson.loads(orjson.dumps(value, default=_fallback, option=_OPTIONS))
    except TypeError:
        return str(value)


def _is_int_overflow(error: TypeError) -> bool:
    return "Integer exceeds 64-bit range" in str(error)


def _encode_exact(value: Any) -> str:
    return json.dumps(
        value,
        default=_stdlib_default,
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def dumps(value: Any) -> bytes:
    """Encode value as compact JSON bytes; None encodes to b"" (an empty proto field).

    Integers beyond 64 bits are encoded exactly (by the standard library's encoder)."""
    if value is None:
        return b""
    try:
        return orjson.dumps(value, default=_fallback, option=_OPTIONS)
    except TypeError as error:
        if not _is_int_overflow(error):
            raise
        return _encode_exact(value).encode()


def loads(data: bytes | str | None) -> Any:
    """Decode JSON bytes; empty input decodes to None. Big integers decode exactly."""
    if not data:
        return None
    value = orjson.loads(data)
    if len(data) >= _SHORTEST_BIG:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        digits = raw.translate(_DIGITS)
        if _LONG_RUN in digits or _LONG_NEGATIVE in digits:
            # Perhaps an integer orjson rounded to a float (or only a long run of digits in
            # a string): the standard library decodes integers exactly. orjson has already
            # checked the document is valid JSON.
            return json.loads(raw, parse_constant=_reject_constant)
    return value


def dumps_str(value: Any) -> str:
    """Encode value as a JSON string (for SSE frames and logs)."""
    try:
        return orjson.dumps(value, default=_fallback, option=_OPTIONS).decode()
    except TypeError as error:
        if not _is_int_overflow(error):
            raise
        return _encode_exact(value)
