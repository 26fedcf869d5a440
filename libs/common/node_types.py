"""The description of a node type, shared by the node service (which registers them) and the
workflow service (which validates definitions against them) and the gateway (which lists
them for editors' palettes).

A node type is plain data so it crosses gRPC as JSON unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

#: The port every node emits on when it completes normally and the edge names no port.
DEFAULT_PORT = "out"
#: The port a node with ``on_error: fail_branch`` emits on when it fails.
ERROR_PORT = "error"


class NodeTypeSpec(BaseModel):
    """What an editor and the validator need to know about a node type."""

    type: str = Field(description="Unique type name used in definitions, e.g. 'http_request'.")
    version: int = Field(
        default=1, description="Bumped when behaviour changes; part of the cache key."
    )
    title: str = Field(description="Human readable name for palettes.")
    description: str = Field(default="", description="One or two sentences for palettes.")
    category: str = Field(
        default="core", description="Palette group: core, flow, ai, integration, human."
    )
    params_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema (draft 2020-12) the node's params must satisfy after parsing "
        "(templated strings are accepted wherever a string could stand).",
    )
    output_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"}, description="JSON Schema of the node's output."
    )
    input_ports: list[str] = Field(
        default_factory=lambda: ["in"], description="Named input handles."
    )
    list_input_ports: list[str] = Field(
        default_factory=list,
        description="Input ports that aggregate every incoming edge into a list (in edge order).",
    )
    output_ports: list[str] = Field(
        default_factory=lambda: [DEFAULT_PORT], description="Named output handles (static ones)."
    )
    source: Literal["builtin", "worker"] = Field(
        default="builtin",
        description="builtin: run by the node service; worker: a tenant's custom type, run by "
        "the workers that registered it.",
    )
    connected: bool = Field(
        default=True,
        description="Whether something can run it now: always for a built-in type; for a "
        "custom type, whether a worker serving it is connected.",
    )
    dynamic_ports: Literal["switch_cases"] | None = Field(
        default=None,
        description="'switch_cases': one output port per entry of params.cases plus 'default'.",
    )

    def ports_for(self, params: dict[str, Any]) -> list[str]:
        """The output ports a node of this type has, given its params (error port excluded)."""
        if self.dynamic_ports == "switch_cases":
            cases = params.get("cases") or []
            return [str(case) for case in cases] + ["default", DEFAULT_PORT]
        return list(self.output_ports)
