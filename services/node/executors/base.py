"""The executor protocol of the node service: what a node attempt receives, what it returns,
how it fails, and the clients of other services it may use.

Executors are pure domain code: they never touch gRPC; the servicer translates
NodeRequest/NodeResult/NodeError to and from protobuf and ``Services`` is wired in server.py.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx
import jsonschema
import orjson
from pydantic import BaseModel, Field, field_validator

from libs.common import expressions
from libs.common.artifacts import ArtifactStore
from libs.common.kv import KV
from libs.common.node_types import NodeTypeSpec
from libs.common.settings import split_csv

MIB = 1024 * 1024


@dataclass
class NodeRequest:
    """One attempt of one node."""

    execution_id: str
    node_id: str
    node_type: str
    attempt: int
    idempotency_key: str  # "execution_id/node_id/attempt"
    params: dict[str, Any]  # raw, still templated: each executor decides what to render
    # {"inputs": {...}, "system": {...}, "<upstream_node_id>": output, ...}
    context: dict[str, Any]
    # Live incoming edges in edge order: (source_node_id, source_port, target_port).
    inputs: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    timeout_s: float | None = None
    # The execution's tenant: a child execution (subworkflow, map) runs in the same one.
    tenant_id: str = ""
    # Reports progress while the attempt runs (an llm node's tokens: {"delta": "..."}); the
    # workflow service publishes it as events. None when nobody listens.
    progress: Callable[[dict[str, Any]], None] | None = None
    # What an earlier attempt of this node reported as {"checkpoint": ...} on its progress
    # channel, handed back so that this one resumes there (a loop's iterations); None: none.
    checkpoint: dict[str, Any] | None = None
    # Reports a checkpoint like ``progress`` and returns once the workflow service has
    # committed it (persist before the next act); raises NodeError("Fenced") when the write
    # was refused. None where the attempt's channel has no way back (then: ``progress``).
    journal: Callable[[dict[str, Any]], Awaitable[None]] | None = None


async def save_checkpoint(request: NodeRequest, report: dict[str, Any], acked: bool = True) -> None:
    """Report ``report`` ({"checkpoint": ...} or an agent's journal delta {"journal": {"at",
    "entries"}}, and what to publish); with ``acked``, return once it is committed where the
    channel acknowledges journal writes. Unacknowledged reports travel in order on the same
    channel: a later acknowledged one is committed with (or after) them. Plain progress where
    the channel has no way back."""
    if acked and request.journal is not None:
        await request.journal(report)
    elif request.progress is not None:
        request.progress(report)


@dataclass
class NodeResult:
    output: Any = None
    # None: every normal port fires. Otherwise only these ports do (branching nodes).
    active_ports: list[str] | None = None
    # Set by human_input: {"prompt", "schema", "timeout_s"}; the node becomes 'waiting'.
    waiting: dict[str, Any] | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)


class NodeError(Exception):
    """A node attempt failed in a way the workflow service records and may retry."""

    def __init__(
        self,
        type: str,
        message: str,
        *,
        retryable: bool = False,
        details: dict[str, Any] | None = None,
        logs: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
        self.retryable = retryable
        self.details = details or {}
        #: What the attempt logged before it failed (e.g. a code node's prints): stored with
        #: the run's logs like a successful attempt's.
        self.logs = logs

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "retryable": self.retryable,
            "details": self.details,
        }


# ---------------------------------------------------------------------------- other services


class AiClient(Protocol):
    async def complete(
        self,
        model: str | list[str],
        prompt: str | None = None,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        provider: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        messages: list[dict[str, Any]] | None = None,
        max_attempts: int | None = None,
    ) -> dict[str, Any]:
        """Return {"text", "usage", "model", "tool_calls", "logs"}; raise NodeError on
        failure (with the call's log records in its ``logs``). ``max_attempts`` bounds the ai
        service's own retries per model (1: none, the caller retries); None: its default."""
        ...


class ToolClient(Protocol):
    async def call(
        self, name: str, arguments: dict[str, Any], idempotency_key: str = ""
    ) -> Any: ...

    async def list(self) -> list[dict[str, Any]]:
        """Every tool as {"name", "description", "input_schema"}."""
        ...


class WorkflowClient(Protocol):
    async def run_child(
        self,
        workflow_id: str,
        inputs: dict[str, Any],
        idempotency_key: str,
        parent_execution_id: str,
        parent_node_id: str,
        tenant_id: str = "",
        version: int = 0,
    ) -> dict[str, Any]:
        """Run a child execution (of the workflow's version, 0 for its latest) to completion
        and return its outputs.

        Raise NodeError carrying the child's error when it fails.
        """
        ...


class NodeSettings(BaseModel):
    """Limits and policies of the executors (built from HEDDLE_* settings in server.py)."""

    http_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Host names, '*.suffix' wildcards, IPs and CIDRs that http_request may "
        "reach even though they are private, loopback or link-local.",
    )
    http_max_response_bytes: int = Field(
        default=10 * MIB, gt=0, description="Largest response body http_request accepts."
    )
    http_default_timeout_s: float = Field(
        default=30.0, gt=0, description="http_request timeout when the node sets none."
    )
    http_max_redirects: int = Field(
        default=5, ge=0, description="Redirects http_request follows, each one re-checked."
    )
    code_timeout_s: float = Field(default=10.0, gt=0, description="Wall-clock limit of code.")
    code_memory_mb: int = Field(default=256, gt=16, description="Address-space limit of code.")
    code_max_output_bytes: int = Field(
        default=4 * MIB, gt=0, description="Largest result plus printed output of code."
    )
    code_max_log_chars: int = Field(
        default=64 * 1024, gt=0, description="Printed output of code kept as logs."
    )
    code_sandbox: Literal["bubblewrap", "unsafe-process"] = Field(
        default="bubblewrap",
        description="Isolation of code nodes: 'bubblewrap' (own namespaces, no network, "
        "read-only minimal filesystem, unprivileged uid; code nodes are refused where it is "
        "unavailable) or 'unsafe-process' (a plain resource-limited subprocess: an opt-in "
        "for machines without bubblewrap, NOT a security boundary).",
    )
    code_bwrap_path: str = Field(
        default="/usr/bin/bwrap", description="The bubblewrap binary code nodes run under."
    )
    code_allow_network: bool = Field(
        default=False,
        description="Give code nodes the host's network (off: a loopback of their own).",
    )
    code_scratch_mb: int = Field(
        default=16, gt=0, description="Size of the writable scratch tmpfs of a code node."
    )
    map_max_concurrency: int = Field(
        default=64, gt=0, description="Upper bound of a map node's concurrency param."
    )
    agent_max_steps: int = Field(default=50, gt=0, description="Upper bound of max_steps.")
    agent_max_delegation_depth: int = Field(
        default=4,
        gt=0,
        description="Agent-to-agent delegations in a chain (A -> B is 1) before the run stops "
        "with delegation_depth_exceeded (under the workflow service's max_call_depth).",
    )
    agent_journal: bool = Field(
        default=True,
        description="Journal agent steps durably (off: published as agent.step events only, "
        "not stored: not resumable).",
    )
    agent_tenant_daily_tokens: int = Field(
        default=0, ge=0, description="Model tokens a tenant's agent runs may use per UTC day."
    )
    agent_tenant_daily_tokens_by_tenant: dict[str, int] = Field(
        default_factory=dict, description="Per-tenant values of agent_tenant_daily_tokens."
    )

    def tenant_daily_tokens(self, tenant_id: str) -> int:
        """The tenant's daily agent token budget (0: none)."""
        return self.agent_tenant_daily_tokens_by_tenant.get(
            tenant_id, self.agent_tenant_daily_tokens
        )

    sql_max_rows: int = Field(
        default=10_000, gt=0, description="Upper bound of a sql node's max_rows param."
    )
    loop_max_iterations: int = Field(
        default=1000, gt=0, description="Upper bound of a loop node's max_iterations."
    )
    sql_default_timeout_s: float = Field(
        default=30.0, gt=0, description="Statement timeout of a sql node that sets none."
    )
    claim_check_bytes: int = Field(
        default=256 * 1024,
        gt=0,
        description="A sql node's rows above this (as JSON Lines) are streamed to the "
        "artifact store and output by reference (HEDDLE_CLAIM_CHECK_BYTES).",
    )
    sql_max_engines: int = Field(
        default=16,
        gt=0,
        description="Connection pools (one per database URL) a node replica keeps for sql "
        "nodes; the least recently used one is closed beyond this.",
    )
    sql_pool_size: int = Field(
        default=4, gt=0, description="Connections of each sql connection pool."
    )
    delay_timer_min_s: float = Field(
        default=60.0,
        ge=0,
        description="A delay node of at least this many seconds is a timer of the workflow "
        "service (the node waits, holding no node slot and no task; its execution is "
        "unloaded while it waits); a shorter one sleeps in its attempt here.",
    )

    _split_allow_hosts = field_validator("http_allow_hosts", mode="before")(split_csv)


@dataclass
class Services:
    ai: AiClient
    tools: ToolClient
    workflows: WorkflowClient
    http: httpx.AsyncClient
    settings: NodeSettings = field(default_factory=NodeSettings)
    #: The replica's artifact store: executors that stream referenced values read it.
    artifacts: ArtifactStore | None = None
    #: The key-value store (HEDDLE_REDIS_URL): a tenant's agent tokens of the day.
    kv: KV | None = None


# ---------------------------------------------------------------------------- executors


class NodeExecutor(Protocol):
    spec: NodeTypeSpec

    async def execute(self, request: NodeRequest, services: Services) -> NodeResult: ...


class ExecutorLookup(Protocol):
    """What an executor that runs other nodes (map) needs from the registry."""

    def get(self, node_type: str) -> NodeExecutor: ...


class Executor(ABC):
    """Base of the built-in executors: prepares the context and params, then calls ``run``.

    Subclasses set ``spec`` and, for params that must reach ``run`` unrendered (expressions,
    code, inline nodes rendered per item), list them in ``raw_params``.
    """

    spec: NodeTypeSpec
    raw_params: tuple[str, ...] = ()

    async def execute(self, request: NodeRequest, services: Services) -> NodeResult:
        request = with_port_lists(request, self.spec)
        params = render_params(request, exclude=self.raw_params)
        params = normalize_params(self.spec.params_schema, params)
        validate_params(self.spec, params)
        return await self.run(request, params, services)

    @abstractmethod
    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult: ...


# ---------------------------------------------------------------------------- helpers


def live_sources(request: NodeRequest) -> list[str]:
    """The distinct source nodes of the live incoming edges, in edge order."""
    return list(dict.fromkeys(source for source, _, _ in request.inputs))


def with_port_lists(request: NodeRequest, spec: NodeTypeSpec) -> NodeRequest:
    """Expose ``ports: {port: [outputs in edge order]}`` for the spec's list input ports."""
    if not spec.list_input_ports:
        return request
    default_port = spec.input_ports[0] if spec.input_ports else "in"
    ports: dict[str, list[Any]] = {port: [] for port in spec.list_input_ports}
    for source, _, target_port in request.inputs:
        port = target_port or default_port
        if port in ports:
            ports[port].append(request.context.get(source))
    return dataclasses.replace(request, context={**request.context, "ports": ports})


def _expression_error(param: str, error: expressions.ExpressionError) -> NodeError:
    return NodeError(
        "ExpressionError",
        f"param '{param}': {error.message}",
        retryable=False,
        details={"param": param},
    )


def render_params(request: NodeRequest, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Render every param but ``exclude`` against the request's context.

    A broken template fails the node with a non-retryable ExpressionError naming the param.
    """
    skipped = set(exclude)
    rendered: dict[str, Any] = {}
    for name, value in request.params.items():
        if name in skipped:
            rendered[name] = value
            continue
        try:
            rendered[name] = expressions.render(value, request.context)
        except expressions.ExpressionError as exc:
            raise _expression_error(name, exc) from exc
    return rendered


def evaluate_param(param: str, expression: Any, context: dict[str, Any]) -> Any:
    """Evaluate an expression param ("{{ expr }}" or bare "expr")."""
    if not isinstance(expression, str):
        return expression  # a literal (true, 3) typed straight into the field
    try:
        return expressions.evaluate(expression, context)
    except expressions.ExpressionError as exc:
        raise _expression_error(param, exc) from exc


def _coerce(expected: Any, value: Any) -> Any:
    # A whole-string template renders to the native value; bridge the common mismatches
    # (a dict into a prompt, "5" into a number) rather than failing the node.
    if expected == "string" and value is not None and not isinstance(value, str):
        return as_text(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if expected == "integer":
                return int(text)
            if expected == "number":
                return float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            return value
        if expected == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
    return value


def as_text(value: Any) -> str:
    """Text for a value bound into a string field: JSON for structures, str() for scalars."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list | bool) or value is None:
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def normalize_params(schema: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Fill absent top-level params from the schema's defaults (one source of truth) and
    coerce rendered values to the declared scalar type where that is unambiguous."""
    normalized = dict(params)
    for name, prop in schema.get("properties", {}).items():
        if normalized.get(name) is None and "type" in prop and "null" not in prop["type"]:
            # "{{ inputs.system }}" with no such input renders to None: treat as not given.
            normalized.pop(name, None)
        if name not in normalized:
            if "default" in prop:
                normalized[name] = prop["default"]
            continue
        normalized[name] = _coerce(prop.get("type"), normalized[name])
    return normalized


_VALIDATORS: dict[int, jsonschema.protocols.Validator] = {}


def _validator_for(spec: NodeTypeSpec) -> jsonschema.protocols.Validator:
    # Building a validator costs far more than running it; specs live as long as the process.
    validator = _VALIDATORS.get(id(spec))
    if validator is None:
        validator = _VALIDATORS[id(spec)] = jsonschema.Draft202012Validator(spec.params_schema)
    return validator


#: (spec, params as canonical JSON) already found valid: a node's params are mostly the same
#: from run to run, and validating costs more than the rest of a cheap node's attempt.
_VALID_PARAMS: OrderedDict[tuple[int, bytes], None] = OrderedDict()
_VALID_PARAMS_MAX = 4096


def validate_params(spec: NodeTypeSpec, params: dict[str, Any]) -> None:
    """Check rendered params against the spec: templates may have produced the wrong type."""
    try:
        key: tuple[int, bytes] | None = (
            id(spec),
            orjson.dumps(params, option=orjson.OPT_SORT_KEYS),
        )
    except TypeError:
        key = None  # not plain JSON (a set, an object): validate, do not remember
    if key is not None and key in _VALID_PARAMS:
        return
    validator = _validator_for(spec)
    problems = [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(params)'}: {error.message}"
        for error in sorted(validator.iter_errors(params), key=lambda e: str(e.absolute_path))
    ]
    if problems:
        raise NodeError(
            "ValidationError",
            f"invalid params for {spec.type}: " + "; ".join(problems),
            retryable=False,
            details={"problems": problems},
        )
    if key is not None:
        _VALID_PARAMS[key] = None
        if len(_VALID_PARAMS) > _VALID_PARAMS_MAX:
            _VALID_PARAMS.popitem(last=False)


def object_schema(
    properties: dict[str, Any] | None = None, required: Iterable[str] = (), **extra: Any
) -> dict[str, Any]:
    """A closed object JSON Schema; the shorthand every spec below uses."""
    result: dict[str, Any] = {
        "type": "object",
        "properties": properties or {},
        "additionalProperties": False,
    }
    if required:
        result["required"] = list(required)
    result.update(extra)
    return result
