"""The core's Checkpoint command: a running attempt's report is kept on the node row, published
as node.progress, handed back to the next attempt (a takeover, a retry) as system.checkpoint,
and a stale attempt's report changes nothing. The history codec knows the command."""

from __future__ import annotations

from services.workflow.execution import (
    Begin,
    Checkpoint,
    CoreConfig,
    ExecutionCore,
    ExecutionInfo,
    NodeState,
    NodeStatus,
    StartAttempt,
    TimerDue,
    TimerKind,
)
from services.workflow.execution.history import decode_command, encode_command, node_row
from tests.workflow.execution.test_execution_core import T0, chain, core_for, failed

SAVED = {"index": 3, "previous": {"n": 2}, "outputs": [{"n": 0}, {"n": 1}, {"n": 2}]}


def test_a_checkpoint_is_kept_published_and_handed_back_after_a_takeover() -> None:
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    first = core.apply(StartAttempt("a"), T0)
    assert "checkpoint" not in first.attempts[0].context["system"]
    fx = core.apply(Checkpoint("a", 1, SAVED, {"iteration": 2}), T0)
    assert fx.nodes["a"].row()["checkpoint"] == SAVED  # written in the batch's flush
    assert [(e["type"], e["data"]) for e in fx.events] == [
        ("node.progress", {"iteration": 2, "attempt": 1})
    ]
    # The row as another replica reads it after the owner died.
    row = fx.nodes["a"].row()
    saved = NodeState("a", "noop", NodeStatus.RUNNING, 1, checkpoint=row["checkpoint"])
    nodes = {"a": saved}
    info = ExecutionInfo(id="e1", workflow_id="w1", tenant_id="t1", status="running")
    taken = ExecutionCore(info, core.definition, core.plan, nodes, CoreConfig())
    assert taken.apply(Begin(), T0).ready == ["a"]
    again = taken.apply(StartAttempt("a"), T0)
    assert again.attempts[0].context["system"]["checkpoint"] == SAVED
    assert "system" not in again.nodes["a"].inputs  # not part of the cache key


def test_a_retry_carries_the_checkpoint_and_a_stale_report_changes_nothing() -> None:
    policy = {"retry": {"max_attempts": 2, "backoff": "fixed", "initial_delay_s": 1}}
    core = core_for(chain("a", a=policy))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    core.apply(Checkpoint("a", 1, SAVED, {"iteration": 2}), T0)
    core.apply(failed("a", retryable=True), T0)
    late = core.apply(Checkpoint("a", 1, {"index": 9}, {"iteration": 8}), T0)
    assert not late.nodes and not late.events
    core.apply(TimerDue("a", 1, TimerKind.RETRY), T0)
    again = core.apply(StartAttempt("a"), T0)
    assert again.attempts[0].context["system"]["checkpoint"] == SAVED


def test_the_history_codec_round_trips_a_checkpoint() -> None:
    command = Checkpoint("a", 2, SAVED, {"iteration": 2})
    assert decode_command(encode_command(command)) == command
    # Rows without one are recorded as before (older fixtures replay unchanged).
    assert "checkpoint" not in node_row(NodeState("a", "noop"))
    assert node_row(NodeState("a", "noop", checkpoint=SAVED))["checkpoint"] == SAVED
