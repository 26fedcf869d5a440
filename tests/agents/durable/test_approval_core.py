"""The core's rule for an agent's tool approval (issue #15): a decision on a node waiting with
`approval` is checked (approve, edit with arguments, reject), kept in the node's checkpoint
beside the journal, and the node runs again through a due retry timer (so that a takeover
re-arms it), its next attempt handed the checkpoint; a bad decision changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from services.workflow.execution import (
    Begin,
    Checkpoint,
    HumanInput,
    NodeResult,
    NodeStatus,
    StartAttempt,
    TimerDue,
    TimerKind,
)
from services.workflow.execution.core import InputRejected
from tests.workflow.execution.test_execution_core import T0, chain, core_for

JOURNAL: dict[str, Any] = {
    "journal": [{"type": "tool_call", "step": "0", "index": 0, "key": "e1/a/0.0"}]
}
WAITING: dict[str, Any] = {
    "prompt": "approve?",
    "approval": {"key": "e1/a/0.0", "tool": "t", "arguments": {}},
}


def test_a_decision_is_checked_kept_in_the_checkpoint_and_resumes_the_node() -> None:
    core = core_for(chain("a"))
    core.apply(Begin(), T0)
    core.apply(StartAttempt("a"), T0)
    core.apply(Checkpoint("a", 1, JOURNAL, {}, "agent.step"), T0)
    fx = core.apply(NodeResult("a", 1, "waiting", waiting=WAITING), T0)
    assert [e["type"] for e in fx.events] == ["node.waiting"]
    bad_decisions = (
        ({"action": "maybe"}, "approve, edit or reject"),
        ({"action": "edit"}, "arguments"),
    )
    for bad, problem in bad_decisions:
        with pytest.raises(InputRejected, match=problem):
            core.apply(HumanInput("a", bad), T0)
        assert core.nodes["a"].status == NodeStatus.WAITING
    decision: dict[str, Any] = {"action": "edit", "arguments": {"x": 1}}
    fx = core.apply(HumanInput("a", decision), T0)
    node = core.nodes["a"]
    assert node.status == NodeStatus.RETRYING and node.waiting is None
    assert node.checkpoint == {**JOURNAL, "approval": {**decision, "key": "e1/a/0.0"}}
    assert [e["type"] for e in fx.events] == ["node.retrying"]
    assert fx.arm["a"] == (TimerKind.RETRY, 1, 0.0)
    assert core.apply(TimerDue("a", 1, TimerKind.RETRY), T0).ready == ["a"]
    again = core.apply(StartAttempt("a"), T0)
    assert again.attempts[0].context["system"]["checkpoint"]["approval"]["action"] == "edit"
    assert [a["status"] for a in core.nodes["a"].attempts] == ["waited"]
