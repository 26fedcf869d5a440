"""The node types the node replicas offer, fetched over gRPC and cached."""

from __future__ import annotations

import asyncio
import logging

import grpc
from heddle.v1 import node_pb2

from libs.common import jsonutil
from libs.common.errors import Unavailable
from libs.common.node_types import NodeTypeSpec
from services.workflow.dispatcher import NodeDispatcher

log = logging.getLogger(__name__)


class NodeCatalog:
    """Node type specs by name; loaded from a node replica on first use."""

    def __init__(self, dispatcher: NodeDispatcher, deadline_s: float = 5.0) -> None:
        self._dispatcher = dispatcher
        self._deadline_s = deadline_s
        self._specs: dict[str, NodeTypeSpec] = {}
        self._raw: bytes = b"[]"
        self._lock = asyncio.Lock()

    def cached(self) -> dict[str, NodeTypeSpec]:
        return self._specs

    async def get(self) -> dict[str, NodeTypeSpec]:
        """The catalog; raises Unavailable when no node replica answers."""
        if self._specs:
            return self._specs
        async with self._lock:
            if not self._specs:
                await self._load()
        return self._specs

    async def raw(self) -> bytes:
        await self.get()
        return self._raw

    async def _load(self) -> None:
        last_error: grpc.RpcError | None = None
        for stub in self._dispatcher.stubs():
            try:
                reply = await stub.ListNodeTypes(
                    node_pb2.ListNodeTypesRequest(), timeout=self._deadline_s
                )
            except grpc.RpcError as error:
                last_error = error
                continue
            specs = [
                NodeTypeSpec.model_validate(item) for item in jsonutil.loads(reply.node_types_json)
            ]
            self._specs = {spec.type: spec for spec in specs}
            self._raw = reply.node_types_json
            return
        raise Unavailable(f"no node replica answered ListNodeTypes: {last_error}")
