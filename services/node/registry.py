"""The node-type registry: every executor the node service can run, by type name."""

from __future__ import annotations

from libs.common.node_types import NodeTypeSpec
from services.node.executors.agent import AgentExecutor
from services.node.executors.ai import LlmExecutor
from services.node.executors.base import NodeExecutor
from services.node.executors.code import CodeExecutor
from services.node.executors.core import (
    InputExecutor,
    NoopExecutor,
    OutputExecutor,
    TemplateExecutor,
    TransformExecutor,
)
from services.node.executors.flow import (
    ConditionExecutor,
    DelayExecutor,
    MergeExecutor,
    SwitchExecutor,
)
from services.node.executors.http import HttpRequestExecutor
from services.node.executors.human import HumanInputExecutor
from services.node.executors.integration import MapExecutor, SubworkflowExecutor, ToolExecutor
from services.node.executors.loop import LoopExecutor
from services.node.executors.retrieve import RetrieveExecutor
from services.node.executors.sql import SqlExecutor
from services.node.executors.wait import WaitEventExecutor


class UnknownNodeTypeError(LookupError):
    def __init__(self, node_type: str) -> None:
        super().__init__(f"unknown node type '{node_type}'")
        self.node_type = node_type


class NodeTypeRegistry:
    def __init__(self) -> None:
        self._executors: dict[str, NodeExecutor] = {}

    def register(self, executor: NodeExecutor) -> None:
        node_type = executor.spec.type
        if node_type in self._executors:
            raise ValueError(f"node type '{node_type}' is already registered")
        self._executors[node_type] = executor

    def get(self, node_type: str) -> NodeExecutor:
        try:
            return self._executors[node_type]
        except KeyError:
            raise UnknownNodeTypeError(node_type) from None

    def __contains__(self, node_type: object) -> bool:
        return node_type in self._executors

    async def close(self) -> None:
        """Release what executors hold (sql's connection pools); each one that has ``close``."""
        for executor in self._executors.values():
            close = getattr(executor, "close", None)
            if close is not None:
                await close()

    def specs(self) -> list[NodeTypeSpec]:
        """Every registered type's spec, in registration order (the palette's order)."""
        return [executor.spec for executor in self._executors.values()]


def default_registry() -> NodeTypeRegistry:
    """A registry with every built-in node type."""
    registry = NodeTypeRegistry()
    executors: list[NodeExecutor] = [
        InputExecutor(),
        OutputExecutor(),
        NoopExecutor(),
        TemplateExecutor(),
        TransformExecutor(),
        CodeExecutor(),
        ConditionExecutor(),
        SwitchExecutor(),
        MergeExecutor(),
        DelayExecutor(),
        MapExecutor(registry),
        LoopExecutor(registry),
        HttpRequestExecutor(),
        ToolExecutor(),
        SubworkflowExecutor(),
        LlmExecutor(),
        AgentExecutor(),
        RetrieveExecutor(),
        HumanInputExecutor(),
        SqlExecutor(),
        WaitEventExecutor(),
    ]
    for executor in executors:
        registry.register(executor)
    return registry
