"""Recorded histories: an execution's starting state and every command applied to its core,
with the effects it produced, as JSON. Replaying one through a fresh core must produce the
same effects, so a change to the rules that alters recorded behaviour fails loudly.

The driver records when `ExecutionRunner.recorder_factory` is set (see
scripts/record_history.py); tests/workflow/execution/ replays the fixtures.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable, Mapping
from typing import Any

from libs.common.definition import ON_FAILURE_NODE_ID, WorkflowDefinition
from libs.common.node_types import NodeTypeSpec
from services.workflow.execution import commands as cmd
from services.workflow.execution.core import CoreConfig, ExecutionCore, ExecutionInfo
from services.workflow.execution.effects import Effects
from services.workflow.execution.state import NodeState, NodeStatus, TimerKind
from services.workflow.planner import ExecutionPlan

FORMAT = 1
_COMMANDS: dict[str, type] = {
    kind.__name__: kind
    for kind in (
        cmd.Begin,
        cmd.StartAttempt,
        cmd.NodeResult,
        cmd.Progress,
        cmd.Checkpoint,
        cmd.Queued,
        cmd.DispatchFailed,
        cmd.TimerDue,
        cmd.Control,
        cmd.HumanInput,
        cmd.DeadlineDue,
        cmd.Settle,
    )
}
_TUPLE_FIELDS = {("StartAttempt", "secret_values"), ("NodeResult", "ports"), ("NodeResult", "logs")}
#: Event fields that are the same on every event of an execution (left out of the record).
_CONSTANT_EVENT_FIELDS = ("execution_id", "trace_id", "tenant_id", "workflow_id")


def plain(value: Any) -> Any:
    """value as JSON-able data: datetimes as ISO strings, enums as values, tuples as lists."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def encode_command(command: cmd.Command) -> dict[str, Any]:
    return {"type": type(command).__name__, **plain(command)}


def decode_command(data: Mapping[str, Any]) -> cmd.Command:
    name = data["type"]
    kind = _COMMANDS.get(name)
    if kind is None:
        raise ValueError(f"unknown command {name!r} in a history")
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if key == "type":
            continue
        if (name, key) in _TUPLE_FIELDS and value is not None:
            value = tuple(value)
        if name == "TimerDue" and key == "kind":
            value = TimerKind(value)
        fields[key] = value
    command: cmd.Command = kind(**fields)
    return command


def encode_effects(fx: Effects) -> dict[str, Any]:
    """The effects as data; empty parts are left out."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(fx):
        value = getattr(fx, f.name)
        if not value:
            continue
        if f.name == "nodes":
            value = {node_id: node_row(node) for node_id, node in value.items()}
        elif f.name == "events":
            value = [
                {k: v for k, v in event.items() if k not in _CONSTANT_EVENT_FIELDS}
                for event in value
            ]
        out[f.name] = plain(value)
    return out


def node_row(node: NodeState) -> dict[str, Any]:
    row: dict[str, Any] = {"node_type": node.node_type, **plain(node.row())}
    if row["checkpoint"] is None:
        del row["checkpoint"]  # histories recorded before checkpoints existed stay valid
    return row


def _node_from(node_id: str, row: Mapping[str, Any]) -> NodeState:
    return NodeState(
        node_id=node_id,
        node_type=row["node_type"],
        status=NodeStatus(row["status"]),
        attempt=row["attempt"],
        output=row.get("output"),
        error=row.get("error"),
        active_ports=row.get("active_ports"),
        attempts=list(row.get("attempts") or []),
        waiting=row.get("waiting"),
        inputs=row.get("inputs"),
        started_at=_time(row.get("started_at")),
        finished_at=_time(row.get("finished_at")),
        due_at=_time(row.get("due_at")),
        checkpoint=row.get("checkpoint"),
    )


class HistoryRecorder:
    """Records one core's commands and effects; `history` is the JSON-able result."""

    def __init__(
        self,
        core: ExecutionCore,
        node_types: Mapping[str, NodeTypeSpec],
        on_close: Callable[[HistoryRecorder], None] | None = None,
    ) -> None:
        info = core.info
        used = {spec.type for spec in core.definition.nodes}
        self.execution_id = core.id
        self.history: dict[str, Any] = {
            "format": FORMAT,
            "definition": core.definition.model_dump(mode="json", exclude_unset=True),
            "node_types": {
                name: node_types[name].model_dump(mode="json")
                for name in sorted(used)
                if name in node_types
            },
            "execution": plain(info),
            "config": plain(core.config),
            # A list: the core's node order (cancel closes nodes in it) survives sort_keys.
            "nodes": [
                {"node_id": node_id, **node_row(node)} for node_id, node in core.nodes.items()
            ],
            "steps": [],
        }
        self._on_close = on_close
        # Policy delays may be random (jitter): each step keeps the ones it drew.
        self._delays: list[float] = []
        policy = core._retry_delay

        def drawn(spec: Any, attempt: int) -> float:
            delay = policy(spec, attempt)
            self._delays.append(delay)
            return delay

        core._retry_delay = drawn

    def record(self, command: cmd.Command, now: dt.datetime, effects: Effects) -> None:
        step: dict[str, Any] = {
            "now": now.isoformat(),
            "command": encode_command(command),
            "effects": encode_effects(effects),
        }
        if self._delays:
            step["retry_delays"], self._delays = self._delays, []
        self.history["steps"].append(step)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close(self)


def core_from(history: Mapping[str, Any]) -> ExecutionCore:
    """A fresh core in the history's starting state (retry delays as recorded)."""
    definition = WorkflowDefinition.model_validate(history["definition"])
    node_types = {
        name: NodeTypeSpec.model_validate(spec) for name, spec in history["node_types"].items()
    }
    graph = definition
    if definition.on_failure is not None:  # the engine plans the graph without its handler
        nodes_only = [n for n in definition.nodes if n.id != ON_FAILURE_NODE_ID]
        graph = definition.model_copy(update={"nodes": nodes_only})
    plan = ExecutionPlan.build(graph, node_types)
    info = dict(history["execution"])
    info["created_at"] = _time(info.get("created_at"))
    nodes = {row["node_id"]: _node_from(row["node_id"], row) for row in history["nodes"]}
    # Delays with jitter are random: replay the ones the history recorded, in order.
    recorded = iter([delay for step in history["steps"] for delay in step.get("retry_delays", ())])

    def retry_delay(_spec: Any, _attempt: int) -> float:
        return float(next(recorded))

    return ExecutionCore(
        ExecutionInfo(**info),
        definition,
        plan,
        nodes,
        CoreConfig(**history["config"]),
        retry_delay_fn=retry_delay,
    )


def replay(history: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Apply the history's commands to a fresh core; the effects of each step, as data."""
    core = core_from(history)
    produced = []
    for step in history["steps"]:
        command = decode_command(step["command"])
        produced.append(encode_effects(core.apply(command, dt.datetime.fromisoformat(step["now"]))))
    return produced
