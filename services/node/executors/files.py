"""`stream_transform`: reads a file or a referenced value from the artifact store as a stream,
transforms it chunk by chunk and writes the result as a new artifact, streamed: whatever the
size, the replica holds one chunk at a time. Its output is the new artifact's reference
(`{"file": {"$ref": "artifact://...", "size", "sha256", "content_type"}}`), which the next
node reads the same way (another stream_transform, or http_request's body, streamed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from libs.common.artifacts import ArtifactMissing, ArtifactRef, ArtifactStore, new_key
from libs.common.claimcheck import allowed_key, tenant_segment
from libs.common.node_types import NodeTypeSpec
from services.node.executors.base import (
    Executor,
    NodeError,
    NodeRequest,
    NodeResult,
    Services,
    object_schema,
)

OPERATIONS: dict[str, Callable[[bytes], bytes]] = {
    "identity": lambda chunk: chunk,
    "upper": bytes.upper,
    "lower": bytes.lower,
}


class StreamTransformExecutor(Executor):
    spec = NodeTypeSpec(
        type="stream_transform",
        title="Stream transform",
        description="Transforms a file (or any value stored by reference) as a stream and "
        "writes the result as a new file: constant memory whatever the size.",
        category="data",
        params_schema=object_schema(
            {
                "source": {
                    "description": "The file to read: a file input ({{ inputs.doc }}) or a "
                    "previous node's file ({{ step.file }}).",
                },
                "operation": {"type": "string", "enum": sorted(OPERATIONS)},
                "content_type": {"type": "string", "maxLength": 255},
            },
            required=["source", "operation"],
        ),
        output_schema=object_schema({"file": {"type": "object"}}, required=["file"]),
    )

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        source = ArtifactRef.from_json(params.get("source"))
        if source is None:
            raise NodeError(
                "InvalidParams", "source is not a file reference (give {{ inputs.<file> }})"
            )
        if not allowed_key(source.key, request.tenant_id):
            raise NodeError("InvalidReference", f"{source.uri} is not this tenant's")
        transform = OPERATIONS[params["operation"]]
        content_type = params.get("content_type") or source.content_type

        async def transformed() -> AsyncIterator[bytes]:
            async for chunk in self.store.open_stream(source):
                yield transform(chunk)

        key = new_key(f"values/{tenant_segment(request.tenant_id)}/streams")
        try:
            written = await self.store.put_stream(key, transformed(), content_type=content_type)
        except ArtifactMissing as missing:
            raise NodeError(
                "ArtifactMissing",
                f"artifact://{missing.key} is missing from the artifact store",
                retryable=True,
                details={"ref": f"artifact://{missing.key}"},
            ) from missing
        return NodeResult(output={"file": written.to_json()})
