"""Replay the recorded histories (histories/*.json, written by scripts/record_history.py from
real executions on the embedded stack) through a fresh pure core: every step must produce the
effects recorded. A change to the rules that alters recorded behaviour fails here, naming the
history, the step and the command; re-record deliberately and review the diff."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.workflow.execution.history import core_from, decode_command, replay

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    history: dict[str, Any] = json.loads(path.read_text())
    return history


def test_there_are_enough_recorded_histories() -> None:
    assert len(HISTORIES) >= 15, [p.name for p in HISTORIES]


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_a_recorded_history_replays_to_the_same_effects(path: Path) -> None:
    history = _load(path)
    produced = replay(history)
    assert len(produced) == len(history["steps"])
    for index, (step, effects) in enumerate(zip(history["steps"], produced, strict=True)):
        assert effects == step["effects"], (
            f"{path.name} step {index}: {step['command']['type']} produced other effects"
        )
    final = [s["effects"]["status"] for s in history["steps"] if "status" in s["effects"]]
    assert final and final[-1] in ("succeeded", "failed", "cancelled")


# What each history is there for: the transitions (and commands) it must exercise.
COVERS: dict[str, set[str]] = {
    "cache_hit": {"cache_hit"},
    "cancel_mid_run": {"execution.cancel", "cancel"},
    "deadline": {"execution.fail", "TimerDue"},
    "human_input": {"wait_for_input", "receive_input", "HumanInput"},
    "human_input_timeout": {"wait_for_input", "input_timeout", "TimerDue"},
    "join_with_skips": {"skip_branch"},
    "missing_secret_beside_a_sibling": {"fail", "cancel", "execution.fail"},
    "node_timeout": {"NodeResult", "fail", "execution.fail"},
    "on_error_fail": {"fail", "execution.fail"},
    "on_error_continue": {"fail", "execution.succeed"},
    "on_error_skip": {"skip", "execution.succeed"},
    "on_error_fail_branch": {"fail", "skip_branch", "execution.succeed"},
    "pause_and_resume": {"execution.pause", "execution.resume"},
    "retries_then_continue": {"schedule_retry", "retry_due", "retry", "TimerDue"},
    "switch": {"skip_branch"},
    "takeover_after_a_crash": {"execution.resume_after_takeover", "redispatch"},
    "when_gate": {"skip", "skip_branch"},
}


@pytest.mark.parametrize("name", sorted(COVERS))
def test_each_history_exercises_what_it_is_named_for(name: str) -> None:
    history = _load(Path(__file__).parent / "histories" / f"{name}.json")
    seen = {t for step in history["steps"] for t in step["effects"].get("transitions", ())}
    seen |= {step["command"]["type"] for step in history["steps"]}
    assert COVERS[name] <= seen, COVERS[name] - seen


def test_a_changed_rule_fails_the_replay() -> None:
    """The replay is sensitive: the same history with one result changed (the last success
    reported as a failure) no longer produces the recorded effects."""
    history = _load(Path(__file__).parent / "histories" / "chain_of_three.json")
    for step in reversed(history["steps"]):
        command = step["command"]
        if command["type"] == "NodeResult" and command["kind"] == "succeeded":
            command.update(
                kind="failed",
                error={"type": "NodeError", "message": "x", "retryable": False, "details": None},
            )
            break
    produced = replay(history)
    assert produced != [s["effects"] for s in history["steps"]]


def test_an_unknown_command_in_a_history_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown command"):
        decode_command({"type": "Teleport"})


def test_the_core_starts_from_the_recorded_rows() -> None:
    history = _load(Path(__file__).parent / "histories" / "takeover_after_a_crash.json")
    core = core_from(history)
    assert core.status == "running"
    assert {n.status for n in core.nodes.values()} >= {"succeeded", "running"}
