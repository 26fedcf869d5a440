"""WorkerService over gRPC: the stream a worker dials in on (Connect) and the relay stream
between workflow replicas (Relay). Translation only: what happens to attempts is in
workers.py, what types look like in catalog.py."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from heddle.v1 import node_pb2, worker_pb2, worker_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.apikeys import parse_api_key, secret_matches
from libs.common.db import utcnow
from libs.common.errors import HeddleError, InvalidArgument, PermissionDenied, Unauthenticated
from libs.common.grpcutil import AUTH_METADATA_KEY, error_trailer
from services.workflow import worker_repository as repo
from services.workflow.catalog import NodeCatalog, custom_type_from_row
from services.workflow.settings import WorkflowSettings
from services.workflow.workers import (
    AttemptKey,
    CustomType,
    WorkerConnection,
    WorkerPool,
    check_against_registered,
    check_duplicates,
    custom_spec,
)

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
#: Scopes that let a key's holder run work for its tenant (a worker serves executions).
WORKER_SCOPES = frozenset({"execute", "admin"})


@dataclass
class _RelayHandle:
    """The attempts a relay stream carries (the pool registers them here for cancelling)."""

    streamed: dict[AttemptKey, Any] = field(default_factory=dict)


def _credential(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == "x-api-key" and value:
            return str(value)
        if key == "authorization" and str(value).lower().startswith("bearer "):
            return str(value)[7:].strip()
    return ""


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(
        self,
        settings: WorkflowSettings,
        sessions: async_sessionmaker[AsyncSession],
        pool: WorkerPool,
        catalog: NodeCatalog,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.pool = pool
        self.catalog = catalog

    # ---- Connect ------------------------------------------------------------------------

    async def _tenant(self, context: grpc.aio.ServicerContext) -> str:
        """The tenant of the caller's API key; it must allow running work (execute/admin)."""
        if not self.settings.auth_enabled:
            return DEFAULT_TENANT
        token = _credential(context.invocation_metadata())
        if not token:
            raise Unauthenticated("a worker needs an API key: x-api-key metadata")
        parsed = parse_api_key(token)
        if parsed is None:
            raise Unauthenticated("invalid credentials")
        prefix, secret = parsed
        async with self.sessions() as session:
            row = await repo.api_key(session, prefix)
        if row is None or not secret_matches(row.secret_hash, self.settings.api_key_pepper, secret):
            raise Unauthenticated("invalid credentials")
        now = utcnow()
        if row.revoked_at is not None:
            raise Unauthenticated("API key revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthenticated("API key expired")
        if not WORKER_SCOPES & set(row.scopes or ()):
            raise PermissionDenied(
                "this API key lacks the 'execute' scope a worker needs to register node types "
                "(HTTP 403): use a key with the execute or admin scope"
            )
        return str(row.tenant_id)

    async def _register(self, tenant_id: str, register: worker_pb2.Register) -> list[CustomType]:
        if not register.node_types:
            raise InvalidArgument("a worker must register at least one node type")
        builtins = await self.catalog.get()
        types = [custom_spec(tenant_id, declared, builtins) for declared in register.node_types]
        check_duplicates(types)
        async with self.sessions.begin() as session:
            for custom in types:
                row = await repo.custom_type(session, tenant_id, custom.spec.type)
                check_against_registered(custom, custom_type_from_row(row) if row else None)
                await repo.save_custom_type(
                    session,
                    tenant_id,
                    custom.spec.type,
                    custom.version,
                    custom.digest,
                    {
                        "spec": custom.spec.model_dump(mode="json"),
                        "input_schema": custom.input_schema,
                    },
                    register.worker_name,
                    utcnow(),
                )
        if self.catalog.custom is not None:
            self.catalog.custom.registered(tenant_id, types)
        return types

    async def Connect(
        self,
        request_iterator: AsyncIterator[worker_pb2.WorkerMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[worker_pb2.ServerMessage]:
        try:
            tenant_id = await self._tenant(context)
            # (Not before: a request iterator never read would warn when collected.)
            messages = aiter(request_iterator)
            try:
                first = await anext(messages)
            except StopAsyncIteration:
                return
            if first.WhichOneof("body") != "register":
                raise InvalidArgument("the first message of a worker must be Register")
            types = await self._register(tenant_id, first.register)
        except HeddleError as error:
            await context.abort(
                error.grpc_status, error.message, trailing_metadata=error_trailer(error)
            )
            return
        connection = WorkerConnection(
            tenant_id=tenant_id,
            name=first.register.worker_name or "worker",
            types={custom.spec.type: custom for custom in types},
            max_concurrency=max(1, first.register.max_concurrency),
            batches=first.register.batches,
        )
        reason = "stream ended"
        reader = asyncio.create_task(self._read(connection, messages))
        try:
            yield worker_pb2.ServerMessage(
                registered=worker_pb2.Registered(
                    worker_id=connection.worker_id,
                    tenant_id=tenant_id,
                    heartbeat_interval_s=self.settings.worker_heartbeat_interval_s,
                    heartbeat_timeout_s=self.settings.worker_heartbeat_timeout_s,
                    batches=connection.batches,
                )
            )
            self.pool.add(connection)
            while True:
                message = await connection.outbox.get()
                if message is None:
                    break
                # What is queued now goes out together (a batching worker's attempts in
                # one AttemptBatch); nothing waits to fill a batch.
                ready, ended = connection.ready(message)
                for out in ready:
                    yield out
                if ended:
                    break
        except asyncio.CancelledError:
            reason = "connection lost"
            raise
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.pool.remove(connection, reason)

    async def _read(
        self, connection: WorkerConnection, messages: AsyncIterator[worker_pb2.WorkerMessage]
    ) -> None:
        pool = self.pool
        try:
            async for message in messages:
                pool.seen(connection)
                kind = message.WhichOneof("body")
                if kind == "outcome":
                    pool.outcome(connection, message.outcome.outcome)
                elif kind == "outcomes":
                    pool.outcomes(connection, [o.outcome for o in message.outcomes.outcomes])
                elif kind == "log":
                    pool.log_record(connection, message.log)
                elif kind == "chunk":
                    pool.chunk(connection, message.chunk)
                elif kind == "drain":
                    pool.drain(connection)
                # heartbeat: being seen is all it says (progress is informational)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass
        except Exception:
            log.exception("worker stream reader failed")
        pool.remove(connection, "worker closed the stream")

    # ---- Relay --------------------------------------------------------------------------

    async def Relay(
        self,
        request_iterator: AsyncIterator[node_pb2.WorkRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[node_pb2.ExecuteNodesResponse]:
        token = self.settings.service_token
        if token:
            presented = dict(context.invocation_metadata() or ()).get(AUTH_METADATA_KEY, "")
            if not hmac.compare_digest(str(presented), token):
                error = Unauthenticated("missing or invalid service credential")
                await context.abort(error.grpc_status, error.message)
                return
        out: asyncio.Queue[node_pb2.ExecuteNodesResponse | None] = asyncio.Queue()
        handle = _RelayHandle()

        def on_outcomes(outcomes: Any) -> None:
            out.put_nowait(node_pb2.ExecuteNodesResponse(outcomes=outcomes))

        def on_failure(tasks: Any, reason: str) -> None:
            refs = [
                node_pb2.AttemptRef(
                    execution_id=task.execution_id, node_id=task.node_id, attempt=task.attempt
                )
                for task in tasks
            ]
            out.put_nowait(
                node_pb2.ExecuteNodesResponse(unavailable=refs, unavailable_reason=reason)
            )

        async def receive() -> None:
            try:
                async for request in request_iterator:
                    if request.tasks:
                        self.pool.dispatch(
                            request.tasks, handle, on_outcomes, on_failure, relayed=True
                        )
                    for ref in request.cancel:
                        self.pool.cancel((ref.execution_id, ref.node_id, ref.attempt))
            finally:
                out.put_nowait(None)

        reader = asyncio.create_task(receive())
        try:
            while True:
                response = await out.get()
                if response is None:
                    break
                yield response
        finally:
            reader.cancel()
            # The replica that sent these is gone (or done): whoever takes its executions
            # over re-sends what was in flight, with the same idempotency keys.
            for key in list(handle.streamed):
                self.pool.cancel(key)
