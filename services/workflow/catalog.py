"""What validation checks definitions against, fetched over gRPC and cached: the node types
the node replicas offer, the custom node types each tenant's workers registered (from the
database), and the tools the tool service offers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from heddle.v1 import node_pb2, tool_pb2, tool_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common import jsonutil
from libs.common.errors import Unavailable
from libs.common.grpcutil import TlsFiles, create_channel
from libs.common.node_types import NodeTypeSpec
from services.workflow import worker_repository as worker_repo
from services.workflow.dispatcher import NodeDispatcher
from services.workflow.worker_models import CustomNodeTypeRow
from services.workflow.workers import CustomType

log = logging.getLogger(__name__)

#: A tool's name -> its input JSON Schema.
ToolSchemas = dict[str, dict[str, Any]]


class NodeCatalog:
    """Node type specs by name; loaded from a node replica on first use."""

    def __init__(
        self,
        dispatcher: NodeDispatcher,
        deadline_s: float = 5.0,
        *,
        tools: ToolCatalog | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._deadline_s = deadline_s
        #: The tool service's catalog, for tool names and arguments; None: not checked.
        self.tools = tools
        self._specs: dict[str, NodeTypeSpec] = {}
        self._raw: bytes = b"[]"
        self._lock = asyncio.Lock()
        #: The tenants' custom types; None: this replica serves no workers (built-ins only).
        self.custom: CustomTypes | None = None

    async def for_tenant(self, tenant_id: str) -> dict[str, NodeTypeSpec]:
        """The built-in types plus the tenant's custom ones (what its definitions may use)."""
        builtins = await self.get()
        if self.custom is None:
            return builtins
        custom = await self.custom.specs(tenant_id)
        return {**builtins, **custom} if custom else builtins

    def version(self, node_type: str, tenant_id: str) -> int:
        """The version of a type (part of cache keys): a custom type's from the tenant's
        registration, as last loaded."""
        if self.custom is not None and "." in node_type:
            spec = self.custom.cached(tenant_id).get(node_type)
            if spec is not None:
                return spec.spec.version
        spec_ = self._specs.get(node_type)
        return spec_.version if spec_ is not None else 1

    async def listing(self, tenant_id: str) -> bytes:
        """The node types a tenant sees, as JSON: built-ins (`source: builtin`) then its custom
        types (`source: worker`, `connected`: whether a worker serving it is connected)."""
        raw = await self.raw()
        if self.custom is None:
            return raw
        items = list(jsonutil.loads(raw) or [])
        items.extend(await self.custom.listing(tenant_id))
        return jsonutil.dumps(items) or b"[]"

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


class CustomTypes:
    """Each tenant's custom node types from `custom_node_types`, cached for ``ttl_s`` (a
    registration on this replica refreshes at once; one on another replica is seen within
    ``ttl_s``)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        connected: Callable[[str], Awaitable[set[str]]],
        *,
        ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._connected = connected
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, dict[str, CustomType]]] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def cached(self, tenant_id: str) -> dict[str, CustomType]:
        """What was last loaded (for the run-time version lookup, which cannot wait); an
        expired entry is reloaded in the background."""
        found = self._cache.get(tenant_id)
        if found is None or self._clock() >= found[0]:
            self._refresh_soon(tenant_id)
        return found[1] if found is not None else {}

    def _refresh_soon(self, tenant_id: str) -> None:
        if tenant_id in self._refreshing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._refreshing.add(tenant_id)

        async def refresh() -> None:
            try:
                await self.types(tenant_id)
            except Exception:  # the database is down: the next lookup tries again
                log.warning("custom node types not reloaded", exc_info=True)
            finally:
                self._refreshing.discard(tenant_id)

        task = loop.create_task(refresh())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def registered(self, tenant_id: str, types: Iterable[CustomType]) -> None:
        """A worker here registered these: use them at once; reload the rest on next use."""
        found = self._cache.get(tenant_id)
        known = dict(found[1]) if found is not None else {}
        known.update({custom.spec.type: custom for custom in types})
        self._cache[tenant_id] = (float("-inf"), known)

    async def types(self, tenant_id: str) -> dict[str, CustomType]:
        found = self._cache.get(tenant_id)
        if found is not None and self._clock() < found[0]:
            return found[1]
        async with self._sessions() as session:
            rows = await worker_repo.custom_types(session, tenant_id)
        types = {row.type: custom_type_from_row(row) for row in rows}
        self._cache[tenant_id] = (self._clock() + self._ttl_s, types)
        return types

    async def specs(self, tenant_id: str) -> dict[str, NodeTypeSpec]:
        return {name: custom.spec for name, custom in (await self.types(tenant_id)).items()}

    async def listing(self, tenant_id: str) -> list[dict[str, Any]]:
        types = await self.types(tenant_id)
        if not types:
            return []
        connected = await self._connected(tenant_id)
        return [custom.listing(name in connected) for name, custom in types.items()]


def custom_type_from_row(row: CustomNodeTypeRow) -> CustomType:
    stored = row.spec or {}
    return CustomType(
        tenant_id=row.tenant_id,
        spec=NodeTypeSpec.model_validate(stored.get("spec") or {}),
        version=row.version,
        input_schema=stored.get("input_schema") or {},
        digest=row.digest,
    )


class ToolCatalog:
    """The tool service's tools (name -> input schema), cached for ``ttl_s``.

    Tools come and go (MCP servers are plugged in at run time), so the list is refreshed
    after ``ttl_s``. Validation must not depend on the tool service being up: when it does
    not answer, ``get`` returns None and the reason is in ``error`` (validation then warns
    instead of checking); the failure is remembered for ``retry_s`` so that a down tool
    service costs one deadline per ``retry_s``, not one per save. Each refresh opens and
    closes its own channel: there is nothing to close when the workflow service stops.
    """

    def __init__(
        self,
        address: str,
        *,
        service_token: str = "",
        tls: TlsFiles | None = None,
        deadline_s: float = 2.0,
        ttl_s: float = 10.0,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address = address
        self._service_token = service_token
        self._tls = tls
        self._deadline_s = deadline_s
        self._ttl_s = ttl_s
        self._retry_s = retry_s
        self._clock = clock
        self._tools: ToolSchemas | None = None
        self._until = float("-inf")
        self._lock = asyncio.Lock()
        #: Why the last refresh failed; None after a successful one.
        self.error: str | None = None

    async def get(self) -> ToolSchemas | None:
        """The tools by name, or None when the tool service did not answer."""
        if self._clock() < self._until:
            return self._tools
        async with self._lock:
            if self._clock() >= self._until:
                await self._refresh()
        return self._tools

    async def _refresh(self) -> None:
        channel = create_channel(self._address, service_token=self._service_token, tls=self._tls)
        try:
            stub = tool_pb2_grpc.ToolServiceStub(channel)
            reply = await stub.ListTools(tool_pb2.ListToolsRequest(), timeout=self._deadline_s)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.aio.AioRpcError) else None
            self._tools = None
            self.error = f"the tool service did not answer ({code.name if code else error})"
            self._until = self._clock() + self._retry_s
            log.warning("tool catalog unavailable", extra={"error": self.error})
            return
        finally:
            await channel.close()
        tools: ToolSchemas = {}
        for tool in reply.tools:
            schema = jsonutil.loads(tool.input_schema_json) if tool.input_schema_json else None
            tools[tool.name] = schema if isinstance(schema, dict) else {}
        self._tools = tools
        self.error = None
        self._until = self._clock() + self._ttl_s
