"""The node service's client of the workflow service, for subworkflow and map nodes."""

from __future__ import annotations

from typing import Any

import grpc
from heddle.v1 import workflow_pb2, workflow_pb2_grpc

from libs.common import jsonutil
from libs.common.errors import from_rpc_error
from services.node.executors.base import NodeError


class GrpcWorkflowClient:
    """Starts child executions and waits for them (idempotent by key across retries)."""

    def __init__(
        self, channel: grpc.aio.Channel, deadline_s: float, wait_deadline_s: float
    ) -> None:
        self._stub = workflow_pb2_grpc.WorkflowServiceStub(channel)
        self._deadline_s = deadline_s
        self._wait_deadline_s = wait_deadline_s

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
        try:
            started = await self._stub.StartExecution(
                workflow_pb2.StartExecutionRequest(
                    workflow_id=workflow_id,
                    version=version,
                    inputs_json=jsonutil.dumps(inputs),
                    idempotency_key=idempotency_key,
                    parent_execution_id=parent_execution_id,
                    parent_node_id=parent_node_id,
                    trigger="subworkflow",
                    tenant_id=tenant_id,
                ),
                timeout=self._deadline_s,
            )
            child = await self._stub.WaitExecution(
                workflow_pb2.WaitExecutionRequest(
                    id=started.execution_id, summary=True, tenant_id=tenant_id
                ),
                timeout=self._wait_deadline_s,
            )
        except grpc.RpcError as rpc_error:
            error = from_rpc_error(rpc_error)
            retryable = error.code in ("unavailable", "deadline_exceeded")
            raise NodeError(
                "SubworkflowError", f"{error.code}: {error.message}", retryable=retryable
            ) from rpc_error
        if child.status != "succeeded":
            raise NodeError(
                "SubworkflowFailed",
                f"child execution {child.id} {child.status}: {child.error.message}",
                details={
                    "execution_id": child.id,
                    "error_type": child.error.type,
                    "message": child.error.message,
                },
            )
        outputs = jsonutil.loads(child.outputs_json)
        return outputs if isinstance(outputs, dict) else {"value": outputs}
