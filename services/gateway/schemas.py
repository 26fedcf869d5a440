"""Request and response models of the HTTP API (they are what /docs shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from libs.common.definition import WorkflowDefinition as WorkflowDefinition
from libs.common.jsontypes import JSON_NUMBER, JsonBool, JsonDatetime, JsonInt
from libs.common.node_types import NodeTypeSpec

ExecutionStatus = Literal["pending", "running", "paused", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
LogLevel = Literal["debug", "info", "warning", "error"]

T = TypeVar("T")

# Request bodies take JSON integers and booleans as JSON Schema reads them (`true` is not 1,
# "5" is not 5), and integers within the range of the protobuf field they go to.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class _Request(BaseModel):
    # A misspelt field is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")


# --- errors -------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. not_found, invalid_json.")
    message: str
    details: Any = Field(
        default=None,
        description="Located field errors, a validation report, the parse position...",
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --- workflows ----------------------------------------------------------------------------


# The workflow service's own model of a definition is what /docs shows for the bodies that
# carry one (read by hand, as JSON or YAML): a mirror of it here drifted (no minLength on
# name, a nullable description, extra fields allowed) while the service refused those.
# (It is imported above as WorkflowDefinition.)

DEFINITION_REF = {"$ref": "#/components/schemas/WorkflowDefinition"}


class WorkflowOut(BaseModel):
    id: str
    name: str
    version: int
    description: str = ""
    # Passed through as stored: the workflow service owns the definition's shape.
    definition: Annotated[
        dict[str, Any] | None, WithJsonSchema({"anyOf": [DEFINITION_REF, {"type": "null"}]})
    ] = Field(default=None, description="Omitted in list responses.")
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ValidationIssueOut(BaseModel):
    code: str
    message: str
    node_id: str | None = None
    edge: int | None = Field(default=None, description="Index in edges when about an edge.")
    field: str | None = None
    severity: str = "error"


class ValidationReport(BaseModel):
    valid: bool
    issues: list[ValidationIssueOut]


class Page(BaseModel, Generic[T]):
    items: list[T]
    page: int
    page_size: int
    total: int


# --- executions ---------------------------------------------------------------------------


class ExecuteRequest(_Request):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inputs": {"name": "Ada"}, "idempotency_key": "order-42"}]}
    )

    inputs: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(
        default=None,
        max_length=256,
        description="Same key, same execution. The Idempotency-Key header works as well.",
    )
    version: Annotated[int, Field(ge=1, le=INT32_MAX), JSON_NUMBER] | None = Field(
        default=None, description="Workflow version; latest if unset."
    )
    priority: Annotated[int, Field(ge=0, le=9), JSON_NUMBER] | None = Field(
        default=None,
        description="0-9 (5 if unset): when the replica's node slots are saturated, the "
        "ready nodes of higher-priority executions start first.",
    )
    from_snapshot: str | None = Field(
        default=None,
        max_length=600,
        pattern=r"^artifact://snapshots/[A-Za-z0-9._=/-]{1,560}$",
        description="Re-run from a snapshot (POST /executions/{id}/snapshot's `$ref`) of "
        "this workflow: the nodes that completed there are reused, the others run; the "
        "snapshot's inputs are used when `inputs` is empty.",
    )


class ExecutionStarted(BaseModel):
    execution_id: str
    status: str
    created: bool = Field(
        default=True, description="False when the idempotency key matched an existing execution."
    )


class ErrorInfoOut(BaseModel):
    type: str
    message: str
    retryable: bool = False
    details: Any = None


class NodeAttemptOut(BaseModel):
    attempt: int
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorInfoOut | None = None


class LoopIterationOut(BaseModel):
    index: int = Field(description="0-based iteration index ({{ loop.index }}).")
    status: str = Field(description="succeeded or failed.")
    attempt: int | None = Field(default=None, description="The node attempt that ran it.")
    started_at: datetime | None = None
    duration_ms: float | None = None
    output: Any = Field(
        default=None,
        description="The iteration's output (left out above 16 KB: see the checkpoint's outputs).",
    )
    output_truncated: bool = False
    error: ErrorInfoOut | None = None


class NodeRunOut(BaseModel):
    node_id: str
    type: str
    status: str
    attempts: int
    output: Any = None
    error: ErrorInfoOut | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    attempt_history: list[NodeAttemptOut] = Field(default_factory=list)
    waiting: Any = Field(default=None, description="What a waiting human_input node asks for.")
    inputs: Any = Field(default=None, description="The referenced values the node ran with.")
    checkpoint: Any = Field(
        default=None,
        description="The node's last durable checkpoint: for a loop, the iteration reached "
        "and the results so far ({index, outputs, previous, iterations}).",
    )
    iterations: list[LoopIterationOut] | None = Field(
        default=None,
        description="A loop's iterations run so far, in order (the last 100 at most: "
        "iterations_total counts them all); null for other nodes.",
    )
    iterations_total: int | None = Field(
        default=None, description="How many iterations the loop has run (failed ones too)."
    )
    children: list[str] = Field(
        default_factory=list,
        description="The executions this node started (subworkflow, map, agent "
        "delegation), oldest first.",
    )


class ExecutionOut(BaseModel):
    id: str
    workflow_id: str
    workflow_version: int
    status: str
    inputs: Any = None
    outputs: Any = None
    error: ErrorInfoOut | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    trigger: str = ""
    parent_execution_id: str | None = None
    parent: dict[str, str] | None = Field(
        default=None,
        description="A child execution's origin: {execution_id, node_id} of the node that "
        "started it (subworkflow, map, agent delegation).",
    )
    retry_of: str | None = None
    forked_from: dict[str, str] | None = Field(
        default=None, description="A fork's origin: {execution_id, node_id}."
    )
    idempotency_key: str | None = None
    trace_id: str | None = None
    last_seq: int = Field(default=0, description="Sequence number of the latest event.")
    priority: int = Field(default=5, description="0-9: higher first when slots are saturated.")
    nodes: list[NodeRunOut] = Field(
        default_factory=list, description="Every node's run; empty in list responses."
    )


class SubmitInputRequest(_Request):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"node_id": "approve", "data": {"approved": True}}]}
    )

    node_id: str = Field(min_length=1)
    data: Any = Field(description="The answer, checked against the node's schema.")


class LogRecordOut(BaseModel):
    ts: datetime | None = None
    level: str
    message: str
    node_id: str | None = None
    attempt: int | None = None
    logger: str | None = None
    service: str | None = None
    trace_id: str | None = None
    fields: Any = None


class LogPage(BaseModel):
    records: list[LogRecordOut]
    next_page_token: str | None = Field(default=None, description="Pass as page_token for more.")


# --- schedules ----------------------------------------------------------------------------


class ScheduleIn(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "nightly report",
                    "workflow_id": "0b7c1a9e-2f4d-4c3a-9e1b-6d5f8a7c9e21",
                    "cron": "0 2 * * *",
                    "timezone": "Europe/Paris",
                    "inputs": {"name": "nightly"},
                }
            ]
        }
    )

    workflow_id: str = Field(min_length=1)
    cron: str = Field(min_length=1, description="5 fields, or 6 with seconds first.")
    timezone: str = Field(default="UTC", description="IANA time zone name.")
    inputs: dict[str, Any] = Field(default_factory=dict)
    enabled: JsonBool = True
    misfire_policy: Literal["skip", "run_once", "run_all"] = "skip"
    misfire_limit: JsonInt = Field(
        default=0, ge=0, le=INT32_MAX, description="Cap on fires replayed by run_all."
    )
    start_at: JsonDatetime | None = None
    end_at: JsonDatetime | None = None
    name: str = ""
    priority: JsonInt = Field(default=5, ge=0, le=9, description="Of the executions it starts.")


class ScheduleOut(BaseModel):
    id: str
    name: str
    workflow_id: str
    cron: str
    timezone: str
    inputs: Any = None
    enabled: bool
    misfire_policy: str
    misfire_limit: int
    priority: int = 5
    start_at: datetime | None = None
    end_at: datetime | None = None
    next_fire_at: datetime | None = None
    last_fire_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ScheduleTriggered(BaseModel):
    dedupe_key: str


class SchedulePreview(BaseModel):
    fire_times: list[datetime]


# --- catalog, triggers, health ------------------------------------------------------------


class NodeTypeList(BaseModel):
    node_types: list[NodeTypeSpec]


class ToolOut(BaseModel):
    name: str
    description: str
    source: str
    input_schema: Any = None
    output_schema: Any = None


class ToolList(BaseModel):
    tools: list[ToolOut]


class ModelOut(BaseModel):
    name: str
    provider: str
    healthy: bool
    breaker_state: str = ""
    info: Any = None


class ModelList(BaseModel):
    models: list[ModelOut]


class TriggerFired(BaseModel):
    execution_ids: list[str]


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class DependencyStatus(BaseModel):
    status: Literal["up", "down"]
    required: bool


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    dependencies: dict[str, DependencyStatus]


# --- security: roles, API keys, secrets, audit ---------------------------------------------

RoleName = Literal["owner", "editor", "executor", "viewer"]
ScopeName = Literal["read", "write", "execute", "admin"]
_MEMBER_SCOPES: tuple[ScopeName, ...] = ("read", "write", "execute")


class GrantIn(_Request):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"principal": "user:ada@example.com", "role": "viewer"}]}
    )

    principal: str = Field(
        min_length=1,
        max_length=300,
        pattern=r"^(key|user):\S+$",
        description="key:<API key id> or user:<JWT subject>.",
    )
    role: RoleName


class GrantOut(BaseModel):
    workflow_id: str
    principal: str
    role: RoleName
    granted_by: str
    created_at: datetime


class GrantList(BaseModel):
    grants: list[GrantOut]


class ApiKeyIn(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "CI deploys", "scopes": ["read", "execute"], "expires_in_days": 90}
            ]
        }
    )

    name: str = Field(default="", max_length=200, description="What the key is for.")
    scopes: list[ScopeName] = Field(
        default_factory=lambda: list(_MEMBER_SCOPES),
        max_length=4,
        description="read, write, execute; admin makes the key a tenant admin.",
    )
    expires_in_days: Annotated[int, Field(ge=1, le=3650), JSON_NUMBER] | None = Field(
        default=None, description="Lifetime; never expires if unset."
    )


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The visible part: keys look like hk_<prefix>_<secret>.")
    scopes: list[str]
    principal: str = Field(description="key:<id>, the name to give roles to.")
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The full key. Shown this once: only a hash is kept.")


class SecretIn(_Request):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "OPENAI_API_KEY", "value": "sk-..."}]}
    )

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", description="{{ secrets.NAME }}")
    value: str = Field(min_length=1, max_length=65536, description="Write-only.")


class SecretOut(BaseModel):
    name: str
    created_at: datetime
    updated_at: datetime


class SecretList(BaseModel):
    secrets: list[SecretOut]


class AuditRecordOut(BaseModel):
    id: str
    ts: datetime
    principal: str
    action: str
    object_type: str
    object_id: str
    outcome: Literal["success", "denied", "failed"]
    status_code: int
    request_id: str
