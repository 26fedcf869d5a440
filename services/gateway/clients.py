"""gRPC clients of the services behind the gateway: one channel and stub per service.

Every unary call goes through `ServiceClients.call`, which applies the deadline and turns a
failed call back into the HeddleError the server raised, so routes never see grpc.RpcError.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from heddle.v1 import (
    ai_pb2_grpc,
    events_pb2,
    knowledge_pb2,
    knowledge_pb2_grpc,
    log_pb2_grpc,
    scheduler_pb2_grpc,
    tool_pb2_grpc,
    workflow_pb2,
    workflow_pb2_grpc,
)
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from libs.common import jsonutil
from libs.common.errors import ERROR_TRAILER, from_rpc_error
from libs.common.grpcutil import (
    TlsFiles,
    check_health,
    create_channel,
    end_stream_span,
    outgoing_metadata,
)
from services.gateway.settings import DEPENDENCIES, GatewaySettings

Response = TypeVar("Response")

_RUN_EXECUTION = "/heddle.v1.WorkflowService/RunExecution"
_RUN_EXECUTION_ONCE = "/heddle.v1.WorkflowService/RunExecutionOnce"

#: Streaming calls whose last message was read, held until their status arrives: one
#: dropped before that is cancelled by its __del__ (a RST_STREAM written and a status built
#: for a call that ends by itself, ~4 % of the gateway's CPU per POST /run). Each leaves at
#: its end, at the latest at its deadline.
_ENDING: set[grpc.aio.Call] = set()


#: Statuses of a call that may have broken on the way (the replica gone, a connection reset,
#: the deadline) rather than been answered by the service: a start so ended may or may not
#: have committed.
_BROKEN = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)

#: How long a start with a chosen id is sent again while its calls break (then: 503).
RESTART_S = 5.0


def broken_call(error: grpc.RpcError) -> bool:
    """Whether a failed call broke on the way, not with a status the service chose (an error
    it raised carries its trailer). UNAVAILABLE always: the service's own says the same (its
    replica stopping interrupted the start)."""
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    if code not in _BROKEN:
        return False
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return not any(key == ERROR_TRAILER for key, _ in trailers or ())


def let_end(call: grpc.aio.Call) -> None:
    """Drop a call whose last message was read without cancelling it (see _ENDING)."""
    if not call.done():
        _ENDING.add(call)
        call.add_done_callback(_ENDING.discard)


@dataclass
class ServiceClients:
    """Channels and stubs of workflow, scheduler, log, ai and tool (node: readiness only)."""

    settings: GatewaySettings
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    workflow: Any = None
    scheduler: Any = None
    log: Any = None
    ai: Any = None
    tool: Any = None
    knowledge: Any = None  # the tool service's KnowledgeService
    tls: TlsFiles | None = None
    # The workflow service on a channel without interceptors, for run_execution.
    workflow_direct: Any = None

    @classmethod
    def connect(cls, settings: GatewaySettings) -> ServiceClients:
        """Open one channel per service (lazily connected: nothing needs to be up yet)."""
        clients = cls(settings, tls=TlsFiles.from_settings(settings))
        clients.workflow = workflow_pb2_grpc.WorkflowServiceStub(
            clients._channel(settings.workflow_address)
        )
        clients.workflow_direct = workflow_pb2_grpc.WorkflowServiceStub(
            clients._channel(settings.workflow_address, intercepted=False)
        )
        clients.scheduler = scheduler_pb2_grpc.SchedulerServiceStub(
            clients._channel(settings.scheduler_address)
        )
        clients.log = log_pb2_grpc.LogServiceStub(clients._channel(settings.log_address))
        clients.ai = ai_pb2_grpc.AiServiceStub(clients._channel(settings.ai_address))
        tool_channel = clients._channel(settings.tool_address)
        clients.tool = tool_pb2_grpc.ToolServiceStub(tool_channel)
        clients.knowledge = knowledge_pb2_grpc.KnowledgeServiceStub(tool_channel)
        return clients

    def _channel(self, address: str, *, intercepted: bool = True) -> grpc.aio.Channel:
        channel = create_channel(
            address,
            service_token=self.settings.service_token,
            tls=self.tls,
            intercepted=intercepted,
        )
        self.channels.append(channel)
        return channel

    def _direct(self, method: str, path: str, request: Any, timeout: float) -> Any:
        """A WorkflowService call of POST /run's hot path on the channel without the
        interceptors: the token, trace context and CLIENT span they would give are given here
        (outgoing_metadata), for an extra task and an async generator less per call."""
        if self.workflow_direct is None:  # clients put together by hand (tests)
            return getattr(self.workflow, method)(request, timeout=timeout)
        span, metadata = outgoing_metadata(self.settings.service_token, path)
        call = getattr(self.workflow_direct, method)(request, timeout=timeout, metadata=metadata)
        if span is not None:
            call.add_done_callback(lambda done: end_stream_span(span, done))
        return call

    def run_execution(
        self, request: workflow_pb2.RunExecutionRequest, timeout: float
    ) -> grpc.aio.UnaryStreamCall:
        """WorkflowService.RunExecution (the stream of a workflow service without
        RunExecutionOnce)."""
        call: grpc.aio.UnaryStreamCall = self._direct(
            "RunExecution", _RUN_EXECUTION, request, timeout
        )
        return call

    async def run_execution_once(
        self, request: workflow_pb2.RunExecutionRequest, deadline_s: float
    ) -> workflow_pb2.RunExecutionReply:
        """WorkflowService.RunExecutionOnce (POST /run's first call). Raises grpc.RpcError
        (UNIMPLEMENTED from a workflow service without it)."""
        reply: workflow_pb2.RunExecutionReply = await self._direct(
            "RunExecutionOnce", _RUN_EXECUTION_ONCE, request, deadline_s
        )
        return reply

    async def start_execution(
        self, request: workflow_pb2.StartExecutionRequest
    ) -> workflow_pb2.StartExecutionResponse:
        """WorkflowService.StartExecution. A start that names its execution_id is idempotent
        by it (a repeat answers the same execution), so it is sent again while its calls
        break (broken_call), for up to RESTART_S; failures raise HeddleError."""
        if not request.execution_id:
            return await self.call(self.workflow.StartExecution, request)
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(
                    lambda error: isinstance(error, grpc.RpcError) and broken_call(error)
                ),
                wait=wait_exponential(multiplier=0.05, max=1.0),
                stop=stop_after_delay(RESTART_S),
                reraise=True,
            ):
                with attempt:
                    started: workflow_pb2.StartExecutionResponse = (
                        await self.workflow.StartExecution(
                            request, timeout=self.settings.grpc_deadline_s
                        )
                    )
                    return started
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self.channels))
        self.channels.clear()

    async def call(self, method: Callable[..., Awaitable[Response]], request: Any) -> Response:
        """Make a unary call with the default deadline; failures raise HeddleError."""
        try:
            return await method(request, timeout=self.settings.grpc_deadline_s)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def stream_events(
        self, execution_id: str, after_seq: int, tenant_id: str = ""
    ) -> AsyncGenerator[events_pb2.Event, None]:
        """Events of an execution after `after_seq`, until the workflow service ends the stream.

        The call's deadline is `event_stream_max_s`, not the unary one: a stream lives as long
        as the execution. Closing the iterator cancels the call.
        """
        request = workflow_pb2.StreamEventsRequest(
            execution_id=execution_id, after_seq=after_seq, tenant_id=tenant_id
        )
        call = self.workflow.StreamEvents(request, timeout=self.settings.event_stream_max_s)
        try:
            while True:
                event = await call.read()
                if event is grpc.aio.EOF:
                    return
                yield event
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()

    async def stream_knowledge_events(
        self, tenant_id: str, knowledge_base_id: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        """A knowledge base's ingestion progress events (JSON) until the caller closes the
        iterator (which cancels the call); the first is `knowledge.stream.opened`."""
        request = knowledge_pb2.KnowledgeBaseRef(
            tenant_id=tenant_id, knowledge_base_id=knowledge_base_id
        )
        call = self.knowledge.StreamEvents(request, timeout=self.settings.event_stream_max_s)
        try:
            while True:
                event = await call.read()
                if event is grpc.aio.EOF:
                    return
                yield jsonutil.loads(event.event_json)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()

    async def health(self) -> dict[str, bool]:
        """Whether each dependency answers the standard gRPC health check with SERVING.

        Node counts as up when any of its replicas does.
        """
        settings = self.settings
        addresses: dict[str, list[str]] = {
            "workflow": [settings.workflow_address],
            "node": list(settings.node_addresses),
            "ai": [settings.ai_address],
            "tool": [settings.tool_address],
            "scheduler": [settings.scheduler_address],
            "log": [settings.log_address],
        }

        async def any_serving(targets: list[str]) -> bool:
            results = await asyncio.gather(
                *(
                    check_health(target, timeout=settings.readiness_timeout_s, tls=self.tls)
                    for target in targets
                )
            )
            return any(results)

        statuses = await asyncio.gather(*(any_serving(addresses[name]) for name in DEPENDENCIES))
        return dict(zip(DEPENDENCIES, statuses, strict=True))
