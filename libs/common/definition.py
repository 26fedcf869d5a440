"""Pydantic models of a workflow definition: what editors send and what is versioned.

The shared contract (ARCHITECTURE.md, "Workflow definition"): the workflow service validates
and stores it, the gateway publishes it as the OpenAPI schema of the bodies it accepts, the
CLI reads files with it. The models check shapes and local rules only (types, ranges, id
syntax). Rules that need the whole graph or the node-type catalog (duplicate ids, cycles,
ports, params schemas, references) live in ``services/workflow/validation.py`` so that every
problem is reported, located, at once.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, Strict
from typing_extensions import TypedDict  # pydantic needs it, not typing's, before 3.12

from libs.common.jsontypes import JSON_NUMBER, JsonBool, JsonFloat, JsonInt

__all__ = [
    "BARE_EXPRESSION_PARAMS",
    "LITERAL_PARAMS",
    "NODE_ID_PATTERN",
    "ON_FAILURE_NODE_ID",
    "RESERVED_NAMES",
    "CachePolicy",
    "EdgeSpec",
    "InputSpec",
    "NodeSpec",
    "OnFailureSpec",
    "RetryPolicy",
    "TriggerSpec",
    "WorkflowDefinition",
    "WorkflowSettings",
    "allocation_burst",
    "expression_sources",
    "node_id_problem",
]

#: Node ids are referenced as ``{{ node_id.field }}``, so they must be template identifiers.
NODE_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"

#: Names a node id may not take: the roots of the template context, Jinja's globals, loop
#: variables and keywords (a node called ``range`` would shadow ``range()``; one called
#: ``none`` could never be referenced).
RESERVED_NAMES: frozenset[str] = frozenset(
    {"inputs", "system", "secrets", "item", "index", "env"}
    | {"loop", "range", "dict", "namespace", "cycler", "joiner", "lipsum"}
    | {"caller", "varargs", "kwargs", "self", "super"}
    | {"true", "false", "none", "True", "False", "None"}
    | {"and", "or", "not", "in", "is", "if", "else", "elif"}
)

#: Params that hold a bare expression (``"fetch.status == 200"``) rather than a template,
#: per node type. ``when`` is always an expression.
#: Params that are never templates (code may contain "{{" of its own, e.g. f-strings).
LITERAL_PARAMS: dict[str, frozenset[str]] = {"code": frozenset({"source"})}

BARE_EXPRESSION_PARAMS: dict[str, frozenset[str]] = {
    "condition": frozenset({"expression"}),
    "switch": frozenset({"expression"}),
    "transform": frozenset({"expression"}),
}

_NODE_ID_RE = re.compile(NODE_ID_PATTERN)

OnError = Literal["fail", "continue", "skip", "fail_branch"]
#: `file`: an uploaded file's id, which the gateway turns into the file's artifact reference.
InputType = Literal["string", "number", "integer", "boolean", "object", "array", "any", "file"]


class _Model(BaseModel):
    # Numbers and booleans are taken as JSON Schema (the API's contract) reads them: `0` is
    # not false, "3" is not 3 (pydantic's lax mode would convert both).
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Model):
    """One declared input of the workflow (``{{ inputs.<name> }}``)."""

    type: InputType = "any"
    required: JsonBool = False
    default: Any = None
    description: str = ""


class RetryPolicy(_Model):
    """``max_attempts`` counts every attempt: 1 means no retry."""

    max_attempts: JsonInt = Field(default=1, ge=1, le=100)
    backoff: Literal["exponential", "fixed"] = "exponential"
    initial_delay_s: JsonFloat = Field(default=0.5, ge=0, le=3600)
    max_delay_s: JsonFloat = Field(default=30.0, ge=0, le=86400)
    jitter: JsonBool = True


class CachePolicy(_Model):
    """Opt-in result cache; ``ttl_s=None`` keeps entries until evicted."""

    ttl_s: Annotated[float, Field(gt=0), Strict()] | None = None


class NodeSpec(_Model):
    # The id's syntax (NODE_ID_PATTERN, not a RESERVED_NAME) is checked by validation.py
    # rather than here: per-field Python validators cost more than everything else in
    # validating a 10,000-node definition, and validation reports it with better context.
    id: str = Field(min_length=1, max_length=64)
    type: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    when: str | None = None
    retry: RetryPolicy | None = None
    timeout_s: Annotated[float, Field(gt=0), Strict()] | None = None
    on_error: OnError = "fail"
    default_output: Any = None
    cache: CachePolicy | None = None
    label: str | None = None
    description: str = ""
    #: Editor metadata, kept as given: ``{"x": 120, "y": 40}``.
    position: dict[str, Any] | None = None
    ui: dict[str, Any] | None = None


#: What an optional edge field's schema says when it is left out (a TypedDict's keys have
#: no defaults: the published schema says what the model it replaced said).
_NONE_BY_DEFAULT = Field(json_schema_extra={"default": None})


# An edge is a dict (its keys checked, a copy of what was given), not a model: a 100,000-node
# workflow has ~200,000 of them, and building a model instance each cost more than all the
# graph checks that read them (0.2 s of pydantic's 0.4 s). Read edge["source"] and
# edge.get("source_port"). No docstring: it would become the published schema's description.
class EdgeSpec(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    source: Annotated[str, Field(min_length=1)]
    target: Annotated[str, Field(min_length=1)]
    source_port: NotRequired[Annotated[str | None, _NONE_BY_DEFAULT]]
    target_port: NotRequired[Annotated[str | None, _NONE_BY_DEFAULT]]
    id: NotRequired[Annotated[str | None, _NONE_BY_DEFAULT]]
    label: NotRequired[Annotated[str | None, _NONE_BY_DEFAULT]]
    ui: NotRequired[Annotated[dict[str, Any] | None, _NONE_BY_DEFAULT]]


class WorkflowSettings(_Model):
    max_concurrency: Annotated[int, Field(ge=1, le=10_000), JSON_NUMBER] | None = None
    #: The execution fails with a Timeout after this many seconds (the tenant's maximum
    #: duration still applies when shorter).
    timeout_s: Annotated[float, Field(gt=0), Strict()] | None = None
    #: The retry policy of every node that sets none of its own.
    retry: RetryPolicy | None = None


#: The node id of a workflow's on_failure handler (a leading '_' keeps it apart from the
#: ids editors choose; validation refuses a node of that id when a handler is declared).
ON_FAILURE_NODE_ID = "_on_failure"


class OnFailureSpec(_Model):
    """The workflow's failure handler, run once when an execution fails: an inline node
    (``type`` and ``params``) or a sub-workflow (``workflow_id`` and ``inputs``). Its
    templates read ``{{ error.message }}``, ``{{ error.node_id }}``, the inputs and the
    outputs of the nodes that succeeded. The execution stays failed whatever it returns."""

    type: str | None = Field(default=None, min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    workflow_id: str | None = Field(default=None, min_length=1, max_length=200)
    inputs: dict[str, Any] | None = None
    retry: RetryPolicy | None = None
    timeout_s: Annotated[float, Field(gt=0), Strict()] | None = None

    def node(self) -> NodeSpec:
        """The handler as the node the engine runs."""
        if self.workflow_id is not None:
            node_type = "subworkflow"
            params: dict[str, Any] = {"workflow_id": self.workflow_id, "inputs": self.inputs or {}}
        else:
            node_type, params = self.type or "", self.params
        return NodeSpec(
            id=ON_FAILURE_NODE_ID,
            type=node_type,
            params=params,
            retry=self.retry,
            timeout_s=self.timeout_s,
            label="on_failure",
        )


class TriggerSpec(_Model):
    """An event that starts the workflow: `POST /api/v1/triggers/<name>` for a webhook."""

    type: Literal["webhook"] = "webhook"
    name: str = Field(pattern=r"^[A-Za-z0-9._\-]{1,128}$")


class WorkflowDefinition(_Model):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    # validation.py reports an empty list (empty_workflow); the schema says so too.
    nodes: list[NodeSpec] = Field(json_schema_extra={"minItems": 1})
    edges: list[EdgeSpec] = Field(default_factory=list)
    outputs: dict[str, Any] | None = None
    settings: WorkflowSettings = Field(default_factory=WorkflowSettings)
    triggers: list[TriggerSpec] = Field(default_factory=list)
    on_failure: OnFailureSpec | None = None
    metadata: dict[str, Any] | None = None
    ui: dict[str, Any] | None = None


def expression_sources(node: NodeSpec) -> Iterator[tuple[str, Any, bool]]:
    """The parts of a node that may hold templates, as ``(field path, value, is_expression)``.

    ``is_expression`` marks values where a string without template syntax is a bare
    expression (``when`` and the params in ``BARE_EXPRESSION_PARAMS``). Shared by the
    validator (to check and locate) and the planner (to know what a node reads).
    """
    bare = BARE_EXPRESSION_PARAMS.get(node.type, frozenset())
    literal = LITERAL_PARAMS.get(node.type, frozenset())
    for key, value in node.params.items():
        if key not in literal:
            yield f"params.{key}", value, key in bare
    if node.when is not None:
        yield "when", node.when, True
    if node.default_output is not None:
        yield "default_output", node.default_output, False


def node_id_problem(value: str) -> str | None:
    """Why a string cannot be a node id, or None if it can."""
    if not _NODE_ID_RE.fullmatch(value):
        return (
            "node ids must start with a letter or '_' and contain only letters, digits and '_'"
            " (at most 64), because templates reference them as {{ id.field }}"
        )
    if value in RESERVED_NAMES:
        return f"'{value}' is a reserved name and cannot be a node id"
    return None


@contextmanager
def allocation_burst() -> Iterator[None]:
    """Pause the cyclic garbage collector while validating or planning a definition.

    Parsing a large definition allocates hundreds of thousands of small, acyclic objects;
    each allocation threshold crossed triggers a collection that walks the whole (large)
    heap of a long-running service: measured 2-3x the work itself for 10,000 nodes. Nothing
    here creates reference cycles, so nothing is lost by collecting later.

    Pausing alone only defers the pass: the objects that survive the burst (the parsed
    definition, the plan: ~1M for 100,000 nodes) are still in the youngest generation when
    the collector resumes, and the first allocation after it walks them all (0.2-0.5 s for
    100,000 nodes), then again as they age. So on the way out they are moved straight to
    the oldest generation (``freeze`` + ``unfreeze`` splice the generation lists, without
    walking them, and reset the young counts): a later full collection walks them as it
    walks the rest of the heap, and nothing more. The price: a cycle that became garbage
    elsewhere just before the burst is collected at that full collection, not sooner.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:  # else someone froze on purpose: leave it so
            gc.freeze()
            gc.unfreeze()
        if was_enabled:
            gc.enable()
