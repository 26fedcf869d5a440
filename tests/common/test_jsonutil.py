"""libs/common/jsonutil: orjson on the hot path, exact big integers through the fallback."""

from __future__ import annotations

import datetime
import decimal
import uuid

import orjson
import pytest

from libs.common import jsonutil

BIG_VALUES = [2**64, 2**100, -(2**63) - 1, -(2**200), 10**40]


@pytest.mark.parametrize("value", BIG_VALUES)
def test_integers_beyond_64_bits_round_trip_exactly(value: int) -> None:
    document = {"value": value, "nested": [1, {"deep": value}], "text": "é"}
    encoded = jsonutil.dumps(document)
    assert str(value).encode() in encoded
    decoded = jsonutil.loads(encoded)
    assert decoded == document
    assert type(decoded["value"]) is int
    assert jsonutil.loads(jsonutil.dumps_str(document)) == document


def test_the_edges_of_64_bits_stay_on_orjson_and_exact() -> None:
    for value in (2**64 - 1, -(2**63), 2**63, 9999999999999999999):
        assert jsonutil.loads(jsonutil.dumps([value])) == [value]


def test_normal_values_encode_as_orjson_does() -> None:
    when = datetime.datetime(2026, 12, 1, 23, 0, tzinfo=datetime.UTC)
    document = {"a": 1, "b": [1.5, None, True], "when": when, 1: "int key"}
    assert jsonutil.dumps(document) == orjson.dumps(
        document, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    )


def test_the_fallback_encodes_what_orjson_would_beside_a_big_integer() -> None:
    when = datetime.datetime(2026, 12, 1, 23, 0, tzinfo=datetime.UTC)
    ident = uuid.UUID(int=7)
    decoded = jsonutil.loads(
        jsonutil.dumps(
            {"big": 2**64, "when": when, "id": ident, "d": decimal.Decimal("1.5"), "s": {3}}
        )
    )
    assert decoded == {
        "big": 2**64,
        "when": "2026-12-01T23:00:00+00:00",
        "id": str(ident),
        "d": "1.5",
        "s": [3],
    }


def test_long_digit_runs_in_strings_and_fractions_decode_unchanged() -> None:
    document = {"id": "1234567890123456789012345", "neg": "-12345678901234567890", "x": 0.5}
    assert jsonutil.loads(jsonutil.dumps(document)) == document
    assert jsonutil.loads(b"[1.000000000000000000000001]") == [1.0]


def test_invalid_json_still_raises_orjsons_error() -> None:
    # The gateway maps orjson.JSONDecodeError to a 400 naming the position.
    with pytest.raises(orjson.JSONDecodeError):
        jsonutil.loads(b'{"big": 18446744073709551616,')
    with pytest.raises(orjson.JSONDecodeError):
        jsonutil.loads(b"[NaN, 123456789012345678901234]")


def test_empty_and_none() -> None:
    assert jsonutil.dumps(None) == b""
    assert jsonutil.loads(b"") is None
    assert jsonutil.loads(None) is None


def test_integers_beyond_1e308_round_trip_up_to_pythons_bound() -> None:
    # orjson refuses these as "infinity" when decoding; the exact path takes them.
    for value in (10**400, -(10**4000)):
        assert jsonutil.loads(jsonutil.dumps({"v": value})) == {"v": value}


def test_integers_beyond_pythons_bound_are_refused_with_orjsons_errors() -> None:
    # Python converts ints of at most 4300 digits to and from text: refused cleanly both
    # ways (the gateway answers 400 for a JSONDecodeError; encoders map a TypeError).
    with pytest.raises(orjson.JSONEncodeError, match="4300 digits"):
        jsonutil.dumps({"v": 10**4400})
    with pytest.raises(orjson.JSONDecodeError, match="4300 digits"):
        jsonutil.loads(b'{"v": ' + b"9" * 5000 + b"}")
    with pytest.raises(orjson.JSONDecodeError, match="infinity"):
        jsonutil.loads(b"[1e400, 123456789012345678901234]")
    with pytest.raises(orjson.JSONDecodeError):
        jsonutil.loads(b'["\\ud800", 123456789012345678901234]')  # a lone surrogate


def test_big_integers_are_exact_whichever_check_finds_them() -> None:
    # Text-heavy: few values for the size, found by walking orjson's result.
    text_heavy = {"text": "lorem ipsum " * 1000, "nested": [{"n": 2**70}]}
    # Many values for the size: the walk runs out and the byte scan finds it.
    number_heavy = {"items": [-(2**64), *range(5000)]}
    for document in (text_heavy, number_heavy):
        decoded = jsonutil.loads(jsonutil.dumps(document))
        assert decoded == document
        assert jsonutil.loads(jsonutil.dumps_str(document)) == document
    assert type(jsonutil.loads(b"  18446744073709551616 ")) is int


def test_large_floats_stay_floats_on_the_exact_path() -> None:
    # A float of integer magnitude is a false alarm for the check: decoded the same.
    document = {"text": "x" * 3000, "f": 1e19, "g": -2.5e300, "i": 7}
    decoded = jsonutil.loads(jsonutil.dumps(document))
    assert decoded == document
    assert type(decoded["f"]) is float and type(decoded["i"]) is int
