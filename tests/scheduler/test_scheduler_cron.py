"""Cron parsing, time zones, DST and misfire policies: pure, no I/O."""

from __future__ import annotations

import datetime as dt

import pytest

from libs.common.errors import InvalidArgument
from services.scheduler.cron import (
    first_fire,
    next_fires,
    plan_fires,
    validate_cron,
    validate_misfire_policy,
    validate_timezone,
)

UTC = dt.UTC


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("*/15 * * * *", [at(2024, 1, 1, 0, 15), at(2024, 1, 1, 0, 30)]),
        ("0 9 * * 1-5", [at(2024, 1, 1, 9), at(2024, 1, 2, 9)]),  # 2024-01-01 is a Monday
        ("*/20 * * * * *", [at(2024, 1, 1, 0, 0, 20), at(2024, 1, 1, 0, 0, 40)]),  # seconds first
        ("30 0 12 * * *", [at(2024, 1, 1, 12, 0, 30), at(2024, 1, 2, 12, 0, 30)]),
        ("@hourly", [at(2024, 1, 1, 1), at(2024, 1, 1, 2)]),
    ],
)
def test_next_fires_five_and_six_fields(cron: str, expected: list[dt.datetime]) -> None:
    assert next_fires(validate_cron(cron), "UTC", at(2024, 1, 1, 0, 0, 1), 2) == expected


def test_next_fires_are_strictly_after() -> None:
    assert next_fires("0 * * * *", "UTC", at(2024, 1, 1, 1), 1) == [at(2024, 1, 1, 2)]


@pytest.mark.parametrize(
    "cron", ["", "* * * *", "* * * * * * *", "61 * * * *", "* 25 * * *", "nonsense here x y z"]
)
def test_bad_cron_is_invalid_argument_naming_the_field(cron: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_cron(cron)
    assert raised.value.details[0]["path"] == "cron"


def test_bad_timezone_and_policy_name_their_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_timezone("Mars/Olympus")
    assert raised.value.details[0]["path"] == "timezone"
    with pytest.raises(InvalidArgument) as raised:
        validate_misfire_policy("sometimes")
    assert raised.value.details[0]["path"] == "misfire_policy"
    assert validate_misfire_policy("") == "skip"


def test_time_zone_wall_clock() -> None:
    # 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer.
    assert next_fires("0 9 * * *", "America/New_York", at(2024, 1, 1), 1) == [at(2024, 1, 1, 14)]
    assert next_fires("0 9 * * *", "America/New_York", at(2024, 7, 1), 1) == [at(2024, 7, 1, 13)]


def test_dst_spring_forward_skipped_wall_time_fires_after_the_gap() -> None:
    # Europe/Berlin jumps 02:00 -> 03:00 on 2024-03-31; 02:30 does not exist that day.
    fires = next_fires("30 2 * * *", "Europe/Berlin", at(2024, 3, 30, 12), 2)
    assert fires == [at(2024, 3, 31, 1, 0), at(2024, 4, 1, 0, 30)]  # 03:00 CEST, then 02:30


def test_dst_spring_forward_hourly_has_no_duplicate() -> None:
    fires = next_fires("30 * * * *", "Europe/Berlin", at(2024, 3, 30, 23), 4)
    assert fires == [at(2024, 3, 30, 23, 30), at(2024, 3, 31, 0, 30), at(2024, 3, 31, 1, 30),
                     at(2024, 3, 31, 2, 30)]  # fmt: skip
    assert len(set(fires)) == len(fires)


def test_dst_fall_back_daily_fires_once_hourly_fires_twice() -> None:
    # Europe/Berlin repeats 02:00-03:00 on 2024-10-27 (CEST 00:00-01:00 UTC, CET 01:00-02:00).
    daily = next_fires("30 2 * * *", "Europe/Berlin", at(2024, 10, 26, 12), 2)
    assert daily == [at(2024, 10, 27, 0, 30), at(2024, 10, 28, 1, 30)]
    hourly = next_fires("30 * * * *", "Europe/Berlin", at(2024, 10, 26, 23, 45), 3)
    assert hourly == [at(2024, 10, 27, 0, 30), at(2024, 10, 27, 1, 30), at(2024, 10, 27, 2, 30)]


def test_first_fire_respects_start_and_end() -> None:
    now = at(2024, 1, 1)
    assert first_fire("0 * * * *", "UTC", now, start_at=at(2024, 1, 2, 5)) == at(2024, 1, 2, 5)
    assert first_fire("0 * * * *", "UTC", now, start_at=at(2023, 1, 1)) == at(2024, 1, 1, 1)
    assert first_fire("0 0 1 1 *", "UTC", now, end_at=at(2024, 6, 1)) is None


NOW = at(2024, 1, 1, 12, 0, 30)


def test_plan_on_time_fire() -> None:
    plan = plan_fires("* * * * *", "UTC", at(2024, 1, 1, 12), NOW)
    assert plan.fires == [at(2024, 1, 1, 12)]
    assert plan.next_fire_at == at(2024, 1, 1, 12, 1)
    assert plan.missed == 0


def test_plan_not_due_yet() -> None:
    plan = plan_fires("* * * * *", "UTC", at(2024, 1, 1, 12, 1), NOW)
    assert plan.fires == [] and plan.next_fire_at == at(2024, 1, 1, 12, 1)


def test_plan_late_within_grace_is_not_a_misfire() -> None:
    plan = plan_fires("*/10 * * * * *", "UTC", at(2024, 1, 1, 12, 0, 0), NOW, policy="skip")
    assert plan.fires == [at(2024, 1, 1, 12, 0, s) for s in (0, 10, 20, 30)]
    assert plan.next_fire_at == at(2024, 1, 1, 12, 0, 40)


DOWN_SINCE = at(2024, 1, 1, 9)  # hourly schedule, scheduler down from 09:00 to 12:00:30


def test_misfire_skip_emits_none_of_the_missed() -> None:
    plan = plan_fires("0 * * * *", "UTC", DOWN_SINCE, NOW, policy="skip", grace_s=10)
    assert plan.fires == []
    assert plan.next_fire_at == at(2024, 1, 1, 13)
    assert plan.missed >= 1


def test_misfire_run_once_emits_one_for_all_missed() -> None:
    plan = plan_fires("0 * * * *", "UTC", DOWN_SINCE, NOW, policy="run_once", grace_s=10)
    assert plan.fires == [at(2024, 1, 1, 12)]  # the latest missed time
    assert plan.next_fire_at == at(2024, 1, 1, 13)


def test_misfire_run_all_emits_each_missed_up_to_the_limit() -> None:
    everything = plan_fires("0 * * * *", "UTC", DOWN_SINCE, NOW, policy="run_all", grace_s=10)
    assert everything.fires == [at(2024, 1, 1, h) for h in (9, 10, 11, 12)]
    capped = plan_fires(
        "0 * * * *", "UTC", DOWN_SINCE, NOW, policy="run_all", misfire_limit=2, grace_s=10
    )
    assert capped.fires == [at(2024, 1, 1, 11), at(2024, 1, 1, 12)]  # the most recent ones
    assert capped.next_fire_at == at(2024, 1, 1, 13)


def test_plan_stops_at_end_at() -> None:
    plan = plan_fires(
        "0 * * * *", "UTC", DOWN_SINCE, NOW, policy="run_all", grace_s=10, end_at=at(2024, 1, 1, 10)
    )
    assert plan.fires == [at(2024, 1, 1, 9), at(2024, 1, 1, 10)]
    assert plan.next_fire_at is None


def test_plan_ended_schedule_is_a_no_op() -> None:
    assert plan_fires("0 * * * *", "UTC", None, NOW).fires == []
