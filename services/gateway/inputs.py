"""What the gateway does to an execution's inputs before the workflow service sees them:

- an input declared `type: file` takes a file id; the file must be the caller tenant's (else a
  located 422); it reaches the workflow as the file's reference
  (`{"$ref": "artifact://files/...", "size", "sha256", "content_type", "file_id", "name"}`),
  which executors that stream (http) read from the artifact store;
- an input whose JSON is larger than HEDDLE_CLAIM_CHECK_BYTES is stored in the artifact store
  and carried by reference (the claim check), resolved by the nodes that read it.
"""

from __future__ import annotations

import re
from typing import Any

from heddle.v1 import workflow_pb2

from libs.common import jsonutil
from libs.common.artifacts import is_ref
from libs.common.claimcheck import ClaimCheck
from libs.common.errors import InvalidArgument
from services.gateway.files import FileRepository

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _may_name_files(inputs: dict[str, Any]) -> bool:
    return any(isinstance(value, str) and _UUID.match(value) for value in inputs.values())


async def prepare_inputs(
    inputs: dict[str, Any],
    *,
    tenant_id: str,
    workflow_id: str,
    version: int,
    clients: Any,
    files: FileRepository,
    claims: ClaimCheck,
) -> dict[str, Any]:
    if not inputs:
        return inputs
    prepared = dict(inputs)
    if _may_name_files(prepared):
        # Only then is the definition read: which inputs are files.
        workflow = await clients.call(
            clients.workflow.GetWorkflow,
            workflow_pb2.GetWorkflowRequest(id=workflow_id, version=version, tenant_id=tenant_id),
        )
        declared = (jsonutil.loads(workflow.definition_json) or {}).get("inputs") or {}
        problems = []
        for name, spec in declared.items():
            value = prepared.get(name)
            if not (isinstance(spec, dict) and spec.get("type") == "file"):
                continue
            if not isinstance(value, str):
                continue
            stored = await files.get(tenant_id, value)
            if stored is None:
                problems.append({"field": f"inputs.{name}", "message": f"file {value!r} not found"})
                continue
            prepared[name] = {**stored.ref.to_json(), "file_id": stored.id, "name": stored.name}
        if problems:
            raise InvalidArgument("inputs name files that do not exist", details=problems)
    for name, value in prepared.items():
        if not is_ref(value) and len(jsonutil.dumps(value)) > claims.threshold:
            prepared[name] = await claims.store_value(value, tenant_id)
    return prepared
