"""services/workflow/priority.Waiters: highest priority first, first come first served among
equals, removal and the tenant count in O(1) (the engine's slot queue)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.workflow.priority import Waiters


@dataclass(frozen=True)
class Run:
    name: str
    priority: int
    tenant: str = "t1"


def _waiters(*runs: Run) -> Waiters[Run]:
    waiters: Waiters[Run] = Waiters(lambda r: r.priority, lambda r: r.tenant)
    for run in runs:
        waiters.add(run)
    return waiters


def test_pops_highest_priority_first_then_longest_waiting() -> None:
    a, b, c, d = Run("a", 5), Run("b", 9), Run("c", 5), Run("d", 1)
    waiters = _waiters(a, b, c, d)
    waiters.add(a)  # already queued: keeps its place
    assert len(waiters) == 4 and a in waiters
    assert [waiters.pop_highest() for _ in range(4)] == [b, a, c, d]
    assert not waiters
    with pytest.raises(IndexError):
        waiters.pop_highest()


def test_above_visits_only_higher_levels_and_discard_removes() -> None:
    low, mid, high, top = Run("low", 0), Run("mid", 5), Run("high", 7), Run("top", 9)
    waiters = _waiters(low, mid, high, top)
    assert list(waiters.above(5)) == [top, high]
    assert list(waiters.above(9)) == []
    assert list(waiters) == [top, high, mid, low]
    waiters.discard(high)
    waiters.discard(high)  # not queued: no change
    assert list(waiters.above(0)) == [top, mid]
    # Out-of-range priorities are held at the nearest level.
    waiters.add(odd := Run("odd", 42))
    assert [waiters.pop_highest(), waiters.pop_highest()] == [top, odd]


def test_counts_the_other_tenants_waiting() -> None:
    a, b, c = Run("a", 5, "acme"), Run("b", 5, "acme"), Run("c", 5, "umbrella")
    waiters = _waiters(a, b, c)
    assert waiters.other_tenants("acme") == 1
    assert waiters.other_tenants("umbrella") == 1
    assert waiters.other_tenants("nobody") == 2
    waiters.discard(c)
    assert waiters.other_tenants("acme") == 0
    waiters.discard(a)
    assert waiters.other_tenants("umbrella") == 1
    waiters.discard(b)
    assert waiters.other_tenants("umbrella") == 0
