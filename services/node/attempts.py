"""One node attempt: gate, executor, timeout and error classification, from the NodeTask
the dispatcher sent to the NodeOutcome it gets back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from heddle.v1 import common_pb2, node_pb2
from opentelemetry import context as otel_context
from opentelemetry import trace

from libs.common import jsonutil
from libs.common.artifacts import REF_MARK, ArtifactMissing
from libs.common.claimcheck import ClaimCheck, ForeignReference, wanted_by
from libs.common.expressions import ExpressionError, evaluate
from libs.common.logging import attempt_var, execution_id_var, node_id_var, tenant_id_var
from libs.common.secrets import redact_outcome, redactable
from libs.common.tracing import context_from_traceparent, spans_wanted, tracer
from services.node.executors.base import NodeError, NodeRequest, NodeResult, Services
from services.node.metrics import NODES_IN_FLIGHT
from services.node.registry import NodeTypeRegistry, UnknownNodeTypeError

log = logging.getLogger(__name__)
_TRACER = tracer("node")

Outcome = node_pb2.NodeOutcome
#: Reports a checkpoint and returns once it is committed (see NodeRequest.journal).
Journal = Callable[[dict[str, Any]], Awaitable[None]]


def _failed(task: node_pb2.NodeTask, error: NodeError, started: float) -> Outcome:
    return Outcome(
        execution_id=task.execution_id,
        node_id=task.node_id,
        attempt=task.attempt,
        kind=Outcome.FAILED,
        error=common_pb2.ErrorInfo(
            type=error.type,
            message=error.message,
            retryable=error.retryable,
            details_json=jsonutil.dumps(error.details or None),
        ),
        started_at=started,
        finished_at=time.time(),
        logs_json=jsonutil.dumps(error.logs or None),
    )


def _done(
    task: node_pb2.NodeTask, result: NodeResult, started: float, output_json: bytes = b""
) -> Outcome:
    """`output_json`: the output already encoded (the claim check measured it)."""
    outcome = Outcome(
        execution_id=task.execution_id,
        node_id=task.node_id,
        attempt=task.attempt,
        started_at=started,
        finished_at=time.time(),
        logs_json=jsonutil.dumps(result.logs or None),
    )
    if result.waiting is not None:
        outcome.kind = Outcome.WAITING
        outcome.waiting_json = jsonutil.dumps(result.waiting)
        return outcome
    outcome.kind = Outcome.SUCCEEDED
    outcome.output_json = output_json or jsonutil.dumps(result.output)
    if result.active_ports is None:
        outcome.all_ports = True
    else:
        outcome.active_ports.extend(result.active_ports)
    return outcome


class NodeRunner:
    """Runs one node attempt: gate, executor, timeout, and error classification."""

    def __init__(
        self, registry: NodeTypeRegistry, services: Services, claims: ClaimCheck | None = None
    ) -> None:
        """`claims`: large outputs go to the artifact store by reference, and references in
        an attempt's context are resolved before it runs (libs/common/claimcheck.py)."""
        self.registry = registry
        self.services = services
        self.claims = claims

    async def run(
        self,
        task: node_pb2.NodeTask,
        progress: Callable[[dict[str, Any]], None] | None = None,
        journal: Journal | None = None,
    ) -> Outcome:
        """Run the attempt; when it was given secrets, their values are redacted from the
        outcome (output, error, logs) before it leaves this service.

        The attempt runs in a `node.execute` span, a child of the workflow's `node.attempt`
        span (task.traceparent), so the ai and tool calls of the executor join the trace.
        """
        if b"secrets" in task.context_json:
            progress = None  # progress is not redacted: a node holding secrets reports none
            journal = None
        if not spans_wanted():
            # Nobody reads spans: keep the trace context (for log lines and calls) only.
            token = otel_context.attach(
                context_from_traceparent(task.traceparent) or otel_context.get_current()
            )
            try:
                with NODES_IN_FLIGHT.track_inprogress():
                    outcome = await self._run(task, progress, journal)
            finally:
                otel_context.detach(token)
            return self._redacted(task, outcome)
        with (
            NODES_IN_FLIGHT.track_inprogress(),
            _TRACER.start_as_current_span(
                f"node.execute {task.node_type}",
                context=context_from_traceparent(task.traceparent),
                attributes={
                    "heddle.execution_id": task.execution_id,
                    "heddle.node_id": task.node_id,
                    "heddle.node_type": task.node_type,
                    "heddle.attempt": task.attempt,
                },
            ) as span,
        ):
            outcome = await self._run(task, progress, journal)
            if outcome.kind == Outcome.FAILED:
                # The type only: the message may hold what the redaction below removes.
                span.set_status(trace.StatusCode.ERROR, outcome.error.type)
        return self._redacted(task, outcome)

    @staticmethod
    def _redacted(task: node_pb2.NodeTask, outcome: Outcome) -> Outcome:
        if b"secrets" not in task.context_json:
            return outcome
        secrets = (jsonutil.loads(task.context_json) or {}).get("secrets")
        values = redactable(list(secrets.values())) if isinstance(secrets, dict) else []
        return redact_outcome(outcome, values) if values else outcome

    async def _run(
        self,
        task: node_pb2.NodeTask,
        progress: Callable[[dict[str, Any]], None] | None,
        journal: Journal | None = None,
    ) -> Outcome:
        started = time.time()
        execution_id_var.set(task.execution_id)
        node_id_var.set(task.node_id)
        attempt_var.set(task.attempt)
        tenant_id_var.set(task.tenant_id)
        try:
            context = jsonutil.loads(task.context_json) or {}
            if self.claims is not None and REF_MARK in task.context_json:
                # (Without the mark, no value of the context is a reference: nothing to
                # resolve, and no value encoded again to look for one.)
                context = await self._resolve(task, context)
            if task.when:
                try:
                    gate = evaluate(task.when, context)
                except ExpressionError as error:
                    raise NodeError("ExpressionError", f"when: {error.message}") from error
                if not gate:
                    return Outcome(
                        execution_id=task.execution_id,
                        node_id=task.node_id,
                        attempt=task.attempt,
                        kind=Outcome.SKIPPED,
                        started_at=started,
                        finished_at=time.time(),
                    )
            try:
                executor = self.registry.get(task.node_type)
            except UnknownNodeTypeError as error:
                raise NodeError("UnknownNodeType", str(error)) from error
            request = NodeRequest(
                execution_id=task.execution_id,
                node_id=task.node_id,
                node_type=task.node_type,
                attempt=task.attempt,
                idempotency_key=task.idempotency_key,
                params=jsonutil.loads(task.params_json) or {},
                context=context,
                inputs=[
                    (i.source, i.source_port or None, i.target_port or None) for i in task.inputs
                ],
                timeout_s=task.timeout_s or None,
                tenant_id=task.tenant_id,
                progress=progress,
                checkpoint=_checkpoint(context),
                journal=journal,
            )
            if task.timeout_s > 0:
                try:
                    async with asyncio.timeout(task.timeout_s):
                        result = await executor.execute(request, self.services)
                except TimeoutError as error:
                    raise NodeError(
                        "Timeout",
                        f"node did not finish within timeout_s={task.timeout_s:g}",
                        retryable=True,
                    ) from error
            else:
                result = await executor.execute(request, self.services)
            if result.waiting is not None:
                return _done(task, result, started)
            # Encoded once: the claim check's size test and the outcome share the bytes.
            output_json = jsonutil.dumps(result.output)
            if self.claims is not None and len(output_json) > self.claims.threshold:
                result.output = await self.claims.check_out(result.output, task.tenant_id)
                output_json = jsonutil.dumps(result.output)
            return _done(task, result, started, output_json)
        except NodeError as error:
            return _failed(task, error, started)
        except Exception as error:
            log.exception("node executor crashed")
            crash = NodeError("InternalError", f"{type(error).__name__}: {error}")
            return _failed(task, crash, started)

    async def _resolve(self, task: node_pb2.NodeTask, context: dict[str, Any]) -> dict[str, Any]:
        """The context with the references the attempt reads resolved; a missing artifact
        fails the attempt, retryably (it may be a store outage), naming the reference."""
        assert self.claims is not None
        wanted = wanted_by(task.params_json, task.when, {i.source for i in task.inputs})
        try:
            return await self.claims.resolve_context(context, task.tenant_id, wanted)
        except ArtifactMissing as missing:
            raise NodeError(
                "ArtifactMissing",
                f"an input of this node is stored by reference as artifact://{missing.key}, "
                "which is missing from the artifact store",
                retryable=True,
                details={"ref": f"artifact://{missing.key}"},
            ) from missing
        except ForeignReference as foreign:
            raise NodeError("InvalidReference", str(foreign)) from foreign


def _checkpoint(context: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint the workflow service hands back to a re-dispatched attempt, as
    ``system.checkpoint`` of its context (what an earlier attempt reported)."""
    system = context.get("system")
    checkpoint = system.get("checkpoint") if isinstance(system, dict) else None
    return checkpoint if isinstance(checkpoint, dict) else None
