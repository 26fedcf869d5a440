"""Cron arithmetic and misfire policy: pure functions, no I/O.

Expressions have 5 fields (minute hour day month weekday) or 6 with seconds first, or are
one of croniter's `@hourly`-style aliases. Fire times are computed on the wall clock of the
schedule's IANA time zone and returned as UTC instants. Across DST changes: a wall time
skipped by spring-forward fires at the first instant after the gap (`30 2 * * *` fires at
03:00 that day, as Vixie cron does); in the hour repeated by fall-back, a schedule whose hour
field is `*` fires in both occurrences (it is hourly), any other fires once, in the first.

Misfires: a due fire scheduled more than `grace_s` before now was *missed* (the scheduler
was down or behind). `skip` emits none of the missed fires, `run_once` emits one (the latest
missed time) for all of them, `run_all` emits each of the latest `misfire_limit` missed ones.
Fires still within the grace period are late, not missed, and always emitted.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from libs.common.errors import InvalidArgument

MISFIRE_POLICIES = ("skip", "run_once", "run_all")
DEFAULT_MISFIRE_POLICY = "skip"
DEFAULT_MISFIRE_LIMIT = 10
# Fires within this grace window are late, not missed; a bound on the work of one plan too.
DEFAULT_GRACE_S = 60.0
_MAX_ON_TIME_FIRES = 10_000
_EPSILON = dt.timedelta(microseconds=1)


def _invalid(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {message}", details=[{"path": field, "message": message}])


def validate_cron(expression: str) -> str:
    """The normalized expression; InvalidArgument naming `cron` when it does not parse."""
    normalized = " ".join(expression.split())
    if not normalized:
        raise _invalid("cron", "is required")
    fields = normalized.split(" ")
    if normalized.startswith("@"):
        if len(fields) != 1:
            raise _invalid("cron", f"alias {fields[0]!r} takes no fields")
    elif len(fields) not in (5, 6):
        raise _invalid("cron", f"needs 5 or 6 fields (seconds first), got {len(fields)}")
    try:
        valid = croniter.is_valid(normalized, second_at_beginning=len(fields) == 6)
    except Exception:  # croniter raises assorted errors for odd input
        valid = False
    if not valid:
        raise _invalid("cron", f"{normalized!r} is not a valid cron expression")
    return normalized


def validate_timezone(name: str) -> ZoneInfo:
    """The zone for an IANA name (empty means UTC); InvalidArgument naming `timezone`."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise _invalid("timezone", f"unknown time zone {name!r}") from error


def validate_misfire_policy(policy: str) -> str:
    """The policy (empty means skip); InvalidArgument naming `misfire_policy`."""
    policy = policy or DEFAULT_MISFIRE_POLICY
    if policy not in MISFIRE_POLICIES:
        raise _invalid("misfire_policy", f"must be one of {', '.join(MISFIRE_POLICIES)}")
    return policy


def _iterator(cron: str, tz: ZoneInfo, start: dt.datetime) -> croniter:
    six_fields = not cron.startswith("@") and len(cron.split()) == 6
    return croniter(cron, start.astimezone(tz), second_at_beginning=six_fields)


def _aware_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(dt.UTC)


def _fires_after(cron: str, zone: ZoneInfo, after: dt.datetime) -> Iterator[dt.datetime]:
    """Fire times strictly after `after`, as UTC instants, strictly increasing."""
    iterator = _iterator(cron, zone, _aware_utc(after))
    every_hour = _hour_field(cron) == "*"
    last: dt.datetime | None = None
    while True:
        fire = _aware_utc(iterator.get_next(dt.datetime))
        # Guard against a repeated instant around DST changes.
        if last is not None and fire <= last:
            continue
        # The repeated hour of a fall-back change: only hourly schedules fire in it twice.
        if not every_hour and _is_second_occurrence(fire, zone):
            continue
        last = fire
        yield fire


def _hour_field(cron: str) -> str:
    if cron.startswith("@"):
        return "*" if cron == "@hourly" else "0"
    fields = cron.split()
    return fields[2] if len(fields) == 6 else fields[1]


def _is_second_occurrence(instant: dt.datetime, zone: ZoneInfo) -> bool:
    local = instant.astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def next_fires(cron: str, tz: str | ZoneInfo, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The next `count` fire times strictly after `after`, as UTC instants, ascending."""
    zone = tz if isinstance(tz, ZoneInfo) else validate_timezone(tz)
    return list(itertools.islice(_fires_after(cron, zone, after), count))


def previous_fires(
    cron: str, tz: str | ZoneInfo, before: dt.datetime, count: int, not_before: dt.datetime
) -> list[dt.datetime]:
    """Up to `count` fire times strictly before `before` and at or after `not_before`,
    ascending."""
    zone = tz if isinstance(tz, ZoneInfo) else validate_timezone(tz)
    iterator = _iterator(cron, zone, _aware_utc(before))
    every_hour = _hour_field(cron) == "*"
    fires: list[dt.datetime] = []
    while len(fires) < count:
        fire = _aware_utc(iterator.get_prev(dt.datetime))
        if fire < not_before:
            break
        if fires and fire >= fires[-1]:
            continue
        if not every_hour and _is_second_occurrence(fire, zone):
            continue
        fires.append(fire)
    fires.reverse()
    return fires


def first_fire(
    cron: str,
    tz: str | ZoneInfo,
    now: dt.datetime,
    start_at: dt.datetime | None = None,
    end_at: dt.datetime | None = None,
) -> dt.datetime | None:
    """The first fire after now and at or after start_at; None when it would be past end_at."""
    after = now
    if start_at is not None and start_at - _EPSILON > now:
        after = start_at - _EPSILON
    fire = next_fires(cron, tz, after, 1)[0]
    if end_at is not None and fire > end_at:
        return None
    return fire


@dataclass(frozen=True)
class FirePlan:
    """What one tick does with a due schedule."""

    fires: list[dt.datetime]  # scheduled times to publish, ascending
    next_fire_at: dt.datetime | None  # None: the schedule has ended
    missed: int  # missed fires not emitted (at least; counted up to the policy's needs)


def plan_fires(
    cron: str,
    tz: str | ZoneInfo,
    next_fire_at: dt.datetime | None,
    now: dt.datetime,
    *,
    policy: str = DEFAULT_MISFIRE_POLICY,
    misfire_limit: int = DEFAULT_MISFIRE_LIMIT,
    grace_s: float = DEFAULT_GRACE_S,
    end_at: dt.datetime | None = None,
) -> FirePlan:
    """The fires due at `now` for a schedule whose next fire was `next_fire_at`."""
    if policy not in MISFIRE_POLICIES:
        raise ValueError(f"unknown misfire policy {policy!r}")
    if next_fire_at is None:
        return FirePlan([], None, 0)
    due_until = now if end_at is None else min(now, end_at)
    if next_fire_at > due_until:
        if end_at is not None and next_fire_at > end_at:
            return FirePlan([], None, 0)
        return FirePlan([], next_fire_at, 0)

    zone = tz if isinstance(tz, ZoneInfo) else validate_timezone(tz)
    grace_cut = now - dt.timedelta(seconds=grace_s)
    on_time: list[dt.datetime] = []
    for fire in _fires_after(cron, zone, max(next_fire_at, grace_cut) - _EPSILON):
        if fire > due_until or len(on_time) >= _MAX_ON_TIME_FIRES:
            break
        on_time.append(fire)

    missed: list[dt.datetime] = []
    missed_count = 0
    if next_fire_at < grace_cut:
        wanted = {"skip": 1, "run_once": 1, "run_all": max(1, misfire_limit)}[policy]
        # Scheduled in [next_fire_at, grace_cut) and not after end_at.
        before = min(grace_cut, due_until + _EPSILON)
        missed = previous_fires(cron, zone, before, wanted, not_before=next_fire_at)
        missed_count = len(missed)
        if policy == "skip":
            missed = []
    upcoming = first_fire(cron, zone, now, end_at=end_at)
    return FirePlan(missed + on_time, upcoming, missed_count - len(missed))
