"""Protobuf messages -> API models (and the few API models -> protobuf), one function each."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf.message import Message
from heddle.v1 import common_pb2, scheduler_pb2

from libs.common import jsonutil
from libs.common.timeutil import field_datetime as time_of
from libs.common.timeutil import from_timestamp
from libs.common.timeutil import optional_timestamp as to_timestamp
from services.gateway.forking import forked_from
from services.gateway.models import ApiKeyRow, AuditRow, RoleGrantRow
from services.gateway.schemas import (
    ApiKeyOut,
    AuditRecordOut,
    ErrorInfoOut,
    ExecutionOut,
    GrantOut,
    LogRecordOut,
    LoopIterationOut,
    ModelOut,
    NodeAttemptOut,
    NodeRunOut,
    Page,
    ScheduleIn,
    ScheduleOut,
    SecretOut,
    ToolOut,
    ValidationIssueOut,
    ValidationReport,
    WorkflowOut,
)

T = TypeVar("T")


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _duration_ms(started: datetime | None, finished: datetime | None) -> float | None:
    if started is None or finished is None:
        return None
    return round((finished - started).total_seconds() * 1000, 3)


def _or_none(value: str) -> str | None:
    return value or None


def error_info(message: Message) -> ErrorInfoOut | None:
    """The `error` (ErrorInfo) field of a message, None when unset."""
    if not message.HasField("error"):
        return None
    error = message.error  # type: ignore[attr-defined]
    return ErrorInfoOut(
        type=error.type,
        message=error.message,
        retryable=error.retryable,
        details=jsonutil.loads(error.details_json),
    )


def paginate(items: Sequence[T], info: common_pb2.PageInfo) -> Page[T]:
    """A page of a list response."""
    return Page[T](items=list(items), page=info.page, page_size=info.page_size, total=info.total)


def workflow_out(workflow: Any) -> WorkflowOut:
    return WorkflowOut(
        id=workflow.id,
        name=workflow.name,
        version=workflow.version,
        description=workflow.description,
        definition=jsonutil.loads(workflow.definition_json),
        created_at=time_of(workflow, "created_at"),
        updated_at=time_of(workflow, "updated_at"),
    )


def validation_report(response: Any) -> ValidationReport:
    return ValidationReport(
        valid=response.valid,
        issues=[
            ValidationIssueOut(
                code=issue.code,
                message=issue.message,
                node_id=_or_none(issue.node_id),
                edge=issue.edge if issue.edge >= 0 else None,
                field=_or_none(issue.field),
                severity=issue.severity or "error",
            )
            for issue in response.issues
        ],
    )


#: A node detail lists a loop's last iterations up to this many (iterations_total counts all).
ITERATIONS_SHOWN = 100
#: An iteration's output shown inline up to this size (the node.iteration event's limit).
ITERATION_OUTPUT_SHOWN = 16 * 1024


def _iterations(checkpoint: Any) -> tuple[list[LoopIterationOut] | None, int | None]:
    """A loop's iteration records (its checkpoint's `iterations`), each with its output."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("iterations"), list):
        return None, None
    records = [r for r in checkpoint["iterations"] if isinstance(r, dict)]
    outputs = checkpoint.get("outputs")
    outputs = outputs if isinstance(outputs, list) else []
    shown: list[LoopIterationOut] = []
    for record in records[-ITERATIONS_SHOWN:]:
        index = int(record.get("index", 0))
        output, truncated = None, False
        if record.get("status") == "succeeded" and 0 <= index < len(outputs):
            output = outputs[index]
            if len(jsonutil.dumps(output)) > ITERATION_OUTPUT_SHOWN:
                output, truncated = None, True
        error = record.get("error")
        shown.append(
            LoopIterationOut(
                index=index,
                status=str(record.get("status", "")),
                attempt=record.get("attempt"),
                started_at=record.get("started_at"),
                duration_ms=record.get("duration_ms"),
                output=output,
                output_truncated=truncated,
                error=ErrorInfoOut(
                    type=str(error.get("type", "")), message=str(error.get("message", ""))
                )
                if isinstance(error, dict)
                else None,
            )
        )
    return shown, len(records)


def _node_run_out(node: Any) -> NodeRunOut:
    started, finished = time_of(node, "started_at"), time_of(node, "finished_at")
    checkpoint = jsonutil.loads(node.checkpoint_json)
    iterations, iterations_total = _iterations(checkpoint)
    return NodeRunOut(
        node_id=node.node_id,
        type=node.node_type,
        status=node.status,
        attempts=node.attempts,
        output=jsonutil.loads(node.output_json),
        error=error_info(node),
        started_at=started,
        finished_at=finished,
        duration_ms=_duration_ms(started, finished),
        attempt_history=[
            NodeAttemptOut(
                attempt=attempt.attempt,
                status=attempt.status,
                started_at=time_of(attempt, "started_at"),
                finished_at=time_of(attempt, "finished_at"),
                error=error_info(attempt),
            )
            for attempt in node.attempt_history
        ],
        waiting=jsonutil.loads(node.waiting_json),
        inputs=jsonutil.loads(node.inputs_json),
        checkpoint=checkpoint,
        iterations=iterations,
        iterations_total=iterations_total,
        children=list(node.child_execution_ids),
    )


def execution_out(execution: Any) -> ExecutionOut:
    """The one conversion of an Execution (list responses simply carry no nodes)."""
    started, finished = time_of(execution, "started_at"), time_of(execution, "finished_at")
    return ExecutionOut(
        id=execution.id,
        workflow_id=execution.workflow_id,
        workflow_version=execution.workflow_version,
        status=execution.status,
        inputs=jsonutil.loads(execution.inputs_json),
        outputs=jsonutil.loads(execution.outputs_json),
        error=error_info(execution),
        created_at=time_of(execution, "created_at"),
        started_at=started,
        finished_at=finished,
        duration_ms=_duration_ms(started, finished),
        trigger=execution.trigger,
        parent_execution_id=_or_none(execution.parent_execution_id),
        parent=(
            {
                "execution_id": execution.parent_execution_id,
                "node_id": execution.parent_node_id,
            }
            if execution.parent_execution_id
            else None
        ),
        retry_of=_or_none(execution.retry_of),
        forked_from=forked_from(execution),
        idempotency_key=_or_none(execution.idempotency_key),
        trace_id=_or_none(execution.trace_id),
        last_seq=execution.last_seq,
        priority=execution.priority,
        nodes=[_node_run_out(node) for node in execution.nodes],
    )


def event_json(event: Any) -> dict[str, Any]:
    """An Event as the JSON object SSE and WebSocket clients receive."""
    return {
        "execution_id": event.execution_id,
        "seq": event.seq,
        "type": event.type,
        "node_id": _or_none(event.node_id),
        "ts": iso(time_of(event, "ts")),
        "data": jsonutil.loads(event.data_json),
        "trace_id": _or_none(event.trace_id),
    }


def log_record_out(record: Any) -> LogRecordOut:
    return LogRecordOut(
        ts=time_of(record, "ts"),
        level=record.level,
        message=record.message,
        node_id=_or_none(record.node_id),
        attempt=record.attempt or None,
        logger=_or_none(record.logger),
        service=_or_none(record.service),
        trace_id=_or_none(record.trace_id),
        fields=jsonutil.loads(record.fields_json),
    )


def schedule_spec(body: ScheduleIn) -> scheduler_pb2.ScheduleSpec:
    return scheduler_pb2.ScheduleSpec(
        workflow_id=body.workflow_id,
        cron=body.cron,
        timezone=body.timezone,
        inputs_json=jsonutil.dumps(body.inputs),
        enabled=body.enabled,
        misfire_policy=body.misfire_policy,
        misfire_limit=body.misfire_limit,
        start_at=to_timestamp(body.start_at),
        end_at=to_timestamp(body.end_at),
        name=body.name,
        priority=body.priority,
    )


def schedule_out(schedule: Any) -> ScheduleOut:
    spec = schedule.spec
    return ScheduleOut(
        id=schedule.id,
        name=spec.name,
        workflow_id=spec.workflow_id,
        cron=spec.cron,
        timezone=spec.timezone or "UTC",
        inputs=jsonutil.loads(spec.inputs_json),
        enabled=spec.enabled,
        misfire_policy=spec.misfire_policy,
        misfire_limit=spec.misfire_limit,
        priority=spec.priority if spec.HasField("priority") else 5,
        start_at=time_of(spec, "start_at"),
        end_at=time_of(spec, "end_at"),
        next_fire_at=time_of(schedule, "next_fire_at"),
        last_fire_at=time_of(schedule, "last_fire_at"),
        created_at=time_of(schedule, "created_at"),
        updated_at=time_of(schedule, "updated_at"),
    )


def tool_out(tool: Any) -> ToolOut:
    return ToolOut(
        name=tool.name,
        description=tool.description,
        source=tool.source,
        input_schema=jsonutil.loads(tool.input_schema_json),
        output_schema=jsonutil.loads(tool.output_schema_json),
    )


def model_out(model: Any) -> ModelOut:
    return ModelOut(
        name=model.name,
        provider=model.provider,
        healthy=model.healthy,
        breaker_state=model.breaker_state,
        info=jsonutil.loads(model.info_json),
    )


def grant_out(row: RoleGrantRow) -> GrantOut:
    return GrantOut(
        workflow_id=row.workflow_id,
        principal=row.principal,
        role=row.role,  # type: ignore[arg-type]
        granted_by=row.granted_by,
        created_at=row.created_at,
    )


def api_key_out(row: ApiKeyRow) -> ApiKeyOut:
    return ApiKeyOut(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=list(row.scopes or []),
        principal=f"key:{row.id}",
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked=row.revoked_at is not None,
    )


def secret_out(secret: Any) -> SecretOut:
    return SecretOut(
        name=secret.name,
        created_at=from_timestamp(secret.created_at),
        updated_at=from_timestamp(secret.updated_at),
    )


def audit_out(row: AuditRow) -> AuditRecordOut:
    return AuditRecordOut(
        id=row.id,
        ts=row.ts,
        principal=row.principal,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        outcome=row.outcome,  # type: ignore[arg-type]
        status_code=row.status_code,
        request_id=row.request_id,
    )
