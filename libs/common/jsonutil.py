"""JSON encoding for the wire: dynamic values travel as UTF-8 JSON bytes inside protobufs.

orjson is fast but holds integers to 64 bits: it refuses to encode a larger one and decodes
one as a float (rounded). JSON itself has no such limit, and a node may well produce
`2 ** 64`, so both directions fall back to the standard library's exact encoder and decoder
for such documents only: encoding tries orjson first and falls back on its 64-bit error;
decoding runs orjson first and hands a document to the standard library only when orjson's
result may have lost an integer: it refused one beyond 1e308, or the result holds a float of
magnitude >= 2**63 (what an integer beyond 64 bits becomes). That check walks the decoded
values while they are few for the document's size (text-heavy documents: a handful of
values for kilobytes of bytes), and otherwise scans the bytes for a digit run long enough to
overflow 64 bits (a translate and a substring search, both in C); either way a false alarm
(a float literal such as 1e19, a long number in a string) only costs the exact path.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

# orjson decodes integers in [-2**63, 2**64 - 1] exactly. Anything outside has at least 20
# digits, or is negative with at least 19: map digits and "-" to "0", the rest to " ", and
# look for 20 zeros (a false alarm, e.g. a long number in a string, only costs the slow path).
_DIGITS = bytes(b"0"[0] if byte in b"0123456789-" else b" "[0] for byte in range(256))
_LONG_RUN = b"0" * 20
# An integer beyond [-2**63, 2**64 - 1] decoded by orjson is a float at least this big.
_LOSSY_FLOAT = 9.2e18
# Walking one decoded value costs about as much as scanning ~100 bytes of its document: walk
# at most one value per 2**9 bytes (a walk that runs out adds <= 1/5 to the scan it falls
# back to), and only when that allows a few (short documents: the scan is sub-microsecond).
_BYTES_PER_VALUE_SHIFT = 9
_MIN_WALK = 4


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
    try:
        return json.dumps(
            value,
            default=_stdlib_default,
            ensure_ascii=False,
            allow_nan=False,
            separators=(",", ":"),
        )
    except ValueError as error:
        # Python's own bound on int <-> str conversions (sys.get_int_max_str_digits(), 4300
        # by default) holds for JSON too: refuse with orjson's error type, as for any
        # value that cannot be encoded.
        raise orjson.JSONEncodeError(f"value cannot be encoded as JSON: {error}") from error


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
    """Decode JSON bytes; empty input decodes to None. Big integers decode exactly.

    Invalid JSON raises orjson.JSONDecodeError (a ValueError), whichever decoder ran."""
    if not data:
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        # orjson refuses integers beyond 1e308 as "infinity": the exact path decodes them.
        if not error.msg.startswith("number is infinity"):
            raise
        return _decode_exact(data.encode() if isinstance(data, str) else data)
    if len(data) < len(_LONG_RUN):
        return value  # too short to hold an integer beyond 64 bits
    kind = type(value)
    lossy: bool | None = None
    if kind is float:
        lossy = not -_LOSSY_FLOAT < value < _LOSSY_FLOAT
    elif kind is dict or kind is list:
        budget = len(data) >> _BYTES_PER_VALUE_SHIFT
        if budget >= _MIN_WALK:
            lossy = _lossy_floats(value, budget)
    else:
        return value
    if lossy is None:  # many values for the size: the byte scan is cheaper than a walk
        raw = data.encode() if isinstance(data, str) else data
        lossy = _LONG_RUN in raw.translate(_DIGITS)
    if lossy:
        # Perhaps an integer orjson rounded to a float: the standard library decodes
        # integers exactly, up to Python's bound on int <-> str conversions (4300 digits),
        # as dumps encodes them.
        return _decode_exact(data.encode() if isinstance(data, str) else data)
    return value


def _lossy_floats(value: dict[str, Any] | list[Any], budget: int) -> bool | None:
    """Whether value holds a float of magnitude >= 2**63 (perhaps a rounded integer); None
    when it holds more than `budget` values before an answer (the caller scans bytes)."""
    stack: list[Any] = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        budget -= 1
        if budget < 0:
            return None
        item = pop()
        kind = type(item)
        if kind is dict:
            extend(item.values())
        elif kind is list:
            extend(item)
        elif kind is float and not -_LOSSY_FLOAT < item < _LOSSY_FLOAT:
            return True
    return False


def _decode_exact(raw: bytes) -> Any:
    # orjson has validated the document (syntax, UTF-8, lone surrogates, NaN), except that
    # it refuses integers beyond 1e308 as "infinity": those are decoded here.
    text = raw.decode()
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as error:
        raise orjson.JSONDecodeError(error.msg, error.doc, error.pos) from None
    except ValueError as error:  # beyond the int <-> str bound, or a float beyond 1e308
        raise orjson.JSONDecodeError(str(error), text, 0) from None


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"number is infinity when parsed as double: {text[:40]}")
    return number


def dumps_str(value: Any) -> str:
    """Encode value as a JSON string (for SSE frames and logs)."""
    try:
        return orjson.dumps(value, default=_fallback, option=_OPTIONS).decode()
    except TypeError as error:
        if not _is_int_overflow(error):
            raise
        return _encode_exact(value)
