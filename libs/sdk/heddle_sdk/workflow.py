"""Workflows as code: a builder of the definition JSON the gateway accepts.

```
wf = Workflow("greet")
name = wf.input("name", type="string", required=True)
hello = wf.node("template", template=f"Hello {name}!")
check = wf.node("condition", expression=f"{hello['text']} != ''", after=hello)
wf.node("output", value=hello["text"], after=check.port("true"))
wf.to_dict()
```

`wf.node(type, **params)` takes the node's params as keywords; the node's own settings are
the keywords `id, after, when, retry, timeout_s, on_error, default_output, cache, label` (a
param with one of those names goes in `params={...}`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

NODE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
OnError = Literal["fail", "continue", "skip", "fail_branch"]
InputType = Literal["string", "number", "integer", "boolean", "object", "array", "any"]


@dataclass(frozen=True)
class PortRef:
    """One output port of a node: `cond.port("true")`."""

    node: NodeRef
    port: str


@dataclass(frozen=True)
class NodeRef:
    """A node added to a workflow. `ref["field"]` is the template `{{ id.field }}`."""

    id: str
    type: str

    def port(self, name: str) -> PortRef:
        return PortRef(self, name)

    def ref(self, path: str = "") -> str:
        """The template of this node's output, or of one field path of it."""
        return f"{{{{ {self.id}{'.' + path if path else ''} }}}}"

    def __getitem__(self, path: str) -> str:
        return self.ref(path)


Upstream: TypeAlias = NodeRef | PortRef
After: TypeAlias = Upstream | Sequence[Upstream] | Mapping[str, Upstream | Sequence[Upstream]]


@dataclass(frozen=True)
class Retry:
    """A node's retry policy; `max_attempts` counts every attempt (1: no retry)."""

    max_attempts: int = 3
    backoff: Literal["exponential", "fixed"] = "exponential"
    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    jitter: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "backoff": self.backoff,
            "initial_delay_s": self.initial_delay_s,
            "max_delay_s": self.max_delay_s,
            "jitter": self.jitter,
        }


class Workflow:
    """A workflow definition under construction."""

    def __init__(
        self, name: str, *, description: str = "", max_concurrency: int | None = None
    ) -> None:
        self.name = name
        self.description = description
        self.max_concurrency = max_concurrency
        self._inputs: dict[str, dict[str, Any]] = {}
        self._nodes: list[dict[str, Any]] = []
        self._edges: list[dict[str, Any]] = []
        self._outputs: dict[str, Any] = {}
        self._ids: set[str] = set()

    def input(
        self,
        name: str,
        *,
        type: InputType = "any",
        required: bool = False,
        default: Any = None,
        description: str = "",
    ) -> str:
        """Declare an input of the workflow; the template `{{ inputs.<name> }}`."""
        spec: dict[str, Any] = {"type": type}
        if required:
            spec["required"] = True
        if default is not None:
            spec["default"] = default
        if description:
            spec["description"] = description
        self._inputs[name] = spec
        return f"{{{{ inputs.{name} }}}}"

    def node(
        self,
        type: str,
        *,
        id: str | None = None,
        after: After | None = None,
        when: str | None = None,
        retry: Retry | int | Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        on_error: OnError | None = None,
        default_output: Any = None,
        cache: bool | float | Mapping[str, Any] | None = None,
        label: str | None = None,
        params: Mapping[str, Any] | None = None,
        **more_params: Any,
    ) -> NodeRef:
        """Add a node; `after` draws the edges into it (a node, a port, a list of them, or
        `{target_port: upstream}`). Raises ValueError for a bad or repeated id."""
        node_id = id or self._new_id(type)
        if not NODE_ID.match(node_id):
            raise ValueError(f"node ids are letters, digits and _ (at most 64): {node_id!r}")
        if node_id in self._ids:
            raise ValueError(f"duplicate node id {node_id!r}")
        self._ids.add(node_id)
        spec: dict[str, Any] = {"id": node_id, "type": type}
        all_params = {**(params or {}), **more_params}
        if all_params:
            spec["params"] = all_params
        if when is not None:
            spec["when"] = when
        if retry is not None:
            spec["retry"] = _retry(retry)
        if timeout_s is not None:
            spec["timeout_s"] = timeout_s
        if on_error is not None:
            spec["on_error"] = on_error
        if default_output is not None:
            spec["default_output"] = default_output
        if cache is not None and cache is not False:
            spec["cache"] = _cache(cache)
        if label is not None:
            spec["label"] = label
        self._nodes.append(spec)
        ref = NodeRef(node_id, type)
        if after is not None:
            self._connect(after, ref)
        return ref

    def edge(
        self,
        source: Upstream,
        target: NodeRef,
        *,
        target_port: str | None = None,
    ) -> None:
        """Connect source (a node or one of its ports) to target (optionally a named input
        port of it)."""
        node = source.node if isinstance(source, PortRef) else source
        for ref in (node, target):
            if ref.id not in self._ids:
                raise ValueError(f"node {ref.id!r} is not in workflow {self.name!r}")
        edge: dict[str, Any] = {"source": node.id, "target": target.id}
        if isinstance(source, PortRef):
            edge["source_port"] = source.port
        if target_port is not None:
            edge["target_port"] = target_port
        self._edges.append(edge)

    def output(self, name: str, value: Any) -> None:
        """One output of the execution (templated, e.g. `node["field"]`)."""
        self._outputs[name] = value

    def to_dict(self) -> dict[str, Any]:
        """The definition, as POST /api/v1/workflows takes it."""
        definition: dict[str, Any] = {"name": self.name}
        if self.description:
            definition["description"] = self.description
        if self._inputs:
            definition["inputs"] = {name: dict(spec) for name, spec in self._inputs.items()}
        definition["nodes"] = [dict(node) for node in self._nodes]
        definition["edges"] = [dict(edge) for edge in self._edges]
        if self._outputs:
            definition["outputs"] = dict(self._outputs)
        if self.max_concurrency is not None:
            definition["settings"] = {"max_concurrency": self.max_concurrency}
        return definition

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def _new_id(self, node_type: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", node_type.rsplit(".", 1)[-1])[:56] or "node"
        if not re.match(r"[A-Za-z_]", base):
            base = f"n_{base}"
        number = 1
        while f"{base}_{number}" in self._ids:
            number += 1
        return f"{base}_{number}"

    def _connect(self, after: After, target: NodeRef) -> None:
        if isinstance(after, NodeRef | PortRef):
            self.edge(after, target)
        elif isinstance(after, Mapping):
            for port, sources in after.items():
                for source in [sources] if isinstance(sources, NodeRef | PortRef) else sources:
                    self.edge(source, target, target_port=port)
        else:
            for source in after:
                self.edge(source, target)


def _retry(retry: Retry | int | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(retry, Retry):
        return retry.to_dict()
    if isinstance(retry, int):
        return {"max_attempts": retry}
    return dict(retry)


def _cache(cache: bool | float | Mapping[str, Any]) -> dict[str, Any]:
    if cache is True:
        return {}
    if isinstance(cache, int | float):
        return {"ttl_s": cache}
    return dict(cache)
