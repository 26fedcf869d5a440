"""The core's `queued` node status (custom node types waiting for a worker): running ->
queued -> running, an end while queued (the schedule-to-start timeout), cancel while queued,
and a takeover re-sending a queued attempt."""

from __future__ import annotations

import datetime as dt

from services.workflow.execution import Begin, Control, NodeResult, Queued, StartAttempt
from tests.workflow.execution.test_execution_core import T0, chain, core_for, event_types, ok


def test_a_sent_attempt_waits_queued_then_runs_when_a_worker_takes_it() -> None:
    core = core_for(chain("a", "b"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    waiting = core.apply(Queued("a", 1, True, "no worker serving 'x.y' is connected"), T0)
    assert waiting.nodes["a"].status == "queued"
    assert waiting.events[0]["data"]["reason"] == "no worker serving 'x.y' is connected"
    taken = core.apply(Queued("a", 1, False), T0)
    assert taken.nodes["a"].status == "running"
    done = core.apply(ok("a"), T0 + dt.timedelta(seconds=1))
    assert done.nodes["a"].status == "succeeded" and done.ready == ["b"]
    assert event_types(waiting, taken) == ["node.queued", "node.assigned"]
    # A stale notice (another attempt, or a node no longer in flight) changes nothing.
    assert not core.apply(Queued("a", 1, True), T0).events


def test_a_queued_attempt_can_fail_without_ever_running() -> None:
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    core.apply(Queued("a", 1, True), T0)
    error = {
        "type": "ScheduleToStartTimeout",
        "message": "no worker serving 'x.y' took the attempt",
        "retryable": False,
        "details": None,
    }
    ended = core.apply(NodeResult("a", 1, "failed", error=error), T0)
    assert ended.nodes["a"].status == "failed"
    assert ended.status == "failed"
    assert core.in_flight == 0


def test_cancel_while_queued_releases_the_slot() -> None:
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    core.apply(Queued("a", 1, True), T0)
    cancelled = core.apply(Control("cancel"), T0)
    assert cancelled.nodes["a"].status == "cancelled"
    assert core.in_flight == 0
