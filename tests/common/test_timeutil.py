"""One Timestamp <-> datetime conversion, always UTC-aware."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp
from heddle.v1 import events_pb2

from libs.common.timeutil import (
    as_utc,
    field_datetime,
    from_timestamp,
    optional_timestamp,
    to_timestamp,
)

PARIS = dt.timezone(dt.timedelta(hours=2))


def test_aware_and_naive_datetimes_are_the_same_instant_in_utc() -> None:
    aware = dt.datetime(2026, 3, 1, 14, 30, 5, 123456, tzinfo=PARIS)
    naive_utc = dt.datetime(2026, 3, 1, 12, 30, 5, 123456)  # noqa: DTZ001 - what SQLite returns
    assert to_timestamp(aware) == to_timestamp(naive_utc)
    stamp = to_timestamp(aware)
    assert stamp.seconds == int(aware.timestamp())
    assert stamp.nanos == 123456000
    back = from_timestamp(stamp)
    assert back.tzinfo is dt.UTC
    assert back == aware
    assert as_utc(naive_utc) == aware


def test_round_trip_matches_protobufs_own_conversion() -> None:
    value = dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    expected = Timestamp()
    expected.FromDatetime(value)
    assert to_timestamp(value) == expected
    assert from_timestamp(expected) == value


def test_unset_fields_and_none_stay_none() -> None:
    assert optional_timestamp(None) is None
    event = events_pb2.Event()
    assert field_datetime(event, "ts") is None
    event.ts.CopyFrom(to_timestamp(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
    assert field_datetime(event, "ts") == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_every_instant_is_what_protobuf_makes_of_it() -> None:
    # to_timestamp computes the difference from the epoch itself: before it (negative
    # seconds, nanos still 0-999,999,999), offsets either side of UTC, naive = UTC.
    east, west = dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(-dt.timedelta(hours=8))
    for value in (
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=dt.UTC),
        dt.datetime(1900, 2, 28, 1, 2, 3, 999999, tzinfo=east),
        dt.datetime(2038, 1, 19, 3, 14, 8, 500000, tzinfo=west),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 3, 11, 40, 0, 42),  # noqa: DTZ001 - naive = UTC
    ):
        expected = Timestamp()
        expected.FromDatetime(as_utc(value))
        assert to_timestamp(value) == expected, value
