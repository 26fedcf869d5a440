"""Snapshots: an execution's state and outputs stored as one artifact
(`POST /api/v1/executions/{id}/snapshot`), from which an execution of the same workflow can be
re-run (`from_snapshot` on execute/run): the nodes that completed are reused."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field

from libs.common import jsonutil
from libs.common.artifacts import REF_SCHEME, ArtifactMissing, put_bytes, read_bytes
from libs.common.claimcheck import allowed_key, tenant_segment
from libs.common.errors import InvalidArgument, NotFound
from services.gateway.routes.common import ERROR_RESPONSES, Caller, Clients, Guard, checked_id
from services.gateway.routes.executions import _authorized

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["executions"])

FORMAT = "heddle.snapshot/1"


class SnapshotOut(BaseModel):
    execution_id: str
    workflow_id: str
    ref: dict[str, Any] = Field(
        description='The artifact: {"$ref": "artifact://snapshots/...", "size", "sha256", '
        '"content_type"}; give its `$ref` as `from_snapshot` to re-run from it.'
    )
    nodes: int = Field(description="Nodes whose state the snapshot holds.")


@router.post(
    "/executions/{execution_id}/snapshot",
    status_code=status.HTTP_201_CREATED,
    summary="Store the execution's state and outputs as an artifact (a snapshot)",
)
async def snapshot_execution(
    execution_id: str,
    request: Request,
    response: Response,
    clients: Clients,
    caller: Caller,
    guard: Guard,
) -> SnapshotOut:
    execution = await _authorized(
        clients, guard, caller, checked_id(execution_id, "execution"), "read"
    )
    state = execution.model_dump(mode="json")
    nodes: dict[str, dict[str, Any]] = {
        node["node_id"]: {
            "status": node["status"],
            "output": node.get("output"),
            "attempt": node.get("attempts") or 1,
        }
        for node in state.get("nodes") or []
    }
    document = {
        "format": FORMAT,
        "execution_id": execution.id,
        "workflow_id": execution.workflow_id,
        "workflow_version": execution.workflow_version,
        "status": execution.status,
        "inputs": state.get("inputs"),
        "outputs": state.get("outputs"),
        "nodes": nodes,
    }
    key = f"snapshots/{tenant_segment(caller.tenant_id)}/{execution.id}-{execution.last_seq}"
    ref = await put_bytes(
        request.app.state.artifacts, key, jsonutil.dumps(document), "application/json"
    )
    request.state.audit_object_id = execution.id
    response.headers["Location"] = f"/api/v1/executions/{execution.id}"
    return SnapshotOut(
        execution_id=execution.id,
        workflow_id=execution.workflow_id,
        ref=ref.to_json(),
        nodes=len(nodes),
    )


async def read_snapshot(app: Any, tenant_id: str, workflow_id: str, uri: str) -> dict[str, Any]:
    """The snapshot a `from_snapshot` names: the caller tenant's, of this workflow."""
    key = uri.removeprefix(REF_SCHEME)
    where = [{"field": "from_snapshot", "message": uri}]
    if not allowed_key(key, tenant_id) or not key.startswith("snapshots/"):
        raise NotFound(f"snapshot {uri!r} not found")
    try:
        document = jsonutil.loads(await read_bytes(app.state.artifacts, key))
    except ArtifactMissing:
        raise NotFound(f"snapshot {uri!r} not found") from None
    except ValueError as error:
        raise InvalidArgument(f"snapshot {uri!r} is not valid JSON: {error}", where) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidArgument(f"{uri!r} is not a Heddle snapshot", where)
    if document.get("workflow_id") != workflow_id:
        raise InvalidArgument(
            f"snapshot {uri!r} is of workflow {document.get('workflow_id')!r}, not {workflow_id!r}",
            where,
        )
    return document
