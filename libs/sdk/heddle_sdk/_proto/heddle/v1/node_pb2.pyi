from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListNodeTypesRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListNodeTypesResponse(_message.Message):
    __slots__ = ("node_types_json",)
    NODE_TYPES_JSON_FIELD_NUMBER: _ClassVar[int]
    node_types_json: bytes
    def __init__(self, node_types_json: _Optional[bytes] = ...) -> None: ...

class LiveInput(_message.Message):
    __slots__ = ("source", "source_port", "target_port")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PORT_FIELD_NUMBER: _ClassVar[int]
    TARGET_PORT_FIELD_NUMBER: _ClassVar[int]
    source: str
    source_port: str
    target_port: str
    def __init__(self, source: _Optional[str] = ..., source_port: _Optional[str] = ..., target_port: _Optional[str] = ...) -> None: ...

class NodeTask(_message.Message):
    __slots__ = ("execution_id", "workflow_id", "node_id", "node_type", "attempt", "idempotency_key", "params_json", "context_json", "inputs", "timeout_s", "when", "tenant_id", "traceparent")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    workflow_id: str
    node_id: str
    node_type: str
    attempt: int
    idempotency_key: str
    params_json: bytes
    context_json: bytes
    inputs: _containers.RepeatedCompositeFieldContainer[LiveInput]
    timeout_s: float
    when: str
    tenant_id: str
    traceparent: str
    def __init__(self, execution_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., node_id: _Optional[str] = ..., node_type: _Optional[str] = ..., attempt: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., params_json: _Optional[bytes] = ..., context_json: _Optional[bytes] = ..., inputs: _Optional[_Iterable[_Union[LiveInput, _Mapping]]] = ..., timeout_s: _Optional[float] = ..., when: _Optional[str] = ..., tenant_id: _Optional[str] = ..., traceparent: _Optional[str] = ...) -> None: ...

class NodeOutcome(_message.Message):
    __slots__ = ("execution_id", "node_id", "attempt", "kind", "output_json", "all_ports", "active_ports", "error", "waiting_json", "logs_json", "started_at", "finished_at")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[NodeOutcome.Kind]
        SUCCEEDED: _ClassVar[NodeOutcome.Kind]
        FAILED: _ClassVar[NodeOutcome.Kind]
        WAITING: _ClassVar[NodeOutcome.Kind]
        SKIPPED: _ClassVar[NodeOutcome.Kind]
        PROGRESS: _ClassVar[NodeOutcome.Kind]
    KIND_UNSPECIFIED: NodeOutcome.Kind
    SUCCEEDED: NodeOutcome.Kind
    FAILED: NodeOutcome.Kind
    WAITING: NodeOutcome.Kind
    SKIPPED: NodeOutcome.Kind
    PROGRESS: NodeOutcome.Kind
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ALL_PORTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_PORTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WAITING_JSON_FIELD_NUMBER: _ClassVar[int]
    LOGS_JSON_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    node_id: str
    attempt: int
    kind: NodeOutcome.Kind
    output_json: bytes
    all_ports: bool
    active_ports: _containers.RepeatedScalarFieldContainer[str]
    error: _common_pb2.ErrorInfo
    waiting_json: bytes
    logs_json: bytes
    started_at: float
    finished_at: float
    def __init__(self, execution_id: _Optional[str] = ..., node_id: _Optional[str] = ..., attempt: _Optional[int] = ..., kind: _Optional[_Union[NodeOutcome.Kind, str]] = ..., output_json: _Optional[bytes] = ..., all_ports: bool = ..., active_ports: _Optional[_Iterable[str]] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., waiting_json: _Optional[bytes] = ..., logs_json: _Optional[bytes] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ...) -> None: ...

class ExecuteNodesRequest(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[NodeTask]
    def __init__(self, tasks: _Optional[_Iterable[_Union[NodeTask, _Mapping]]] = ...) -> None: ...

class WorkRequest(_message.Message):
    __slots__ = ("tasks", "cancel", "acks")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[NodeTask]
    cancel: _containers.RepeatedCompositeFieldContainer[AttemptRef]
    acks: _containers.RepeatedCompositeFieldContainer[JournalAck]
    def __init__(self, tasks: _Optional[_Iterable[_Union[NodeTask, _Mapping]]] = ..., cancel: _Optional[_Iterable[_Union[AttemptRef, _Mapping]]] = ..., acks: _Optional[_Iterable[_Union[JournalAck, _Mapping]]] = ...) -> None: ...

class JournalAck(_message.Message):
    __slots__ = ("execution_id", "node_id", "attempt", "seq", "accepted")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    node_id: str
    attempt: int
    seq: int
    accepted: bool
    def __init__(self, execution_id: _Optional[str] = ..., node_id: _Optional[str] = ..., attempt: _Optional[int] = ..., seq: _Optional[int] = ..., accepted: bool = ...) -> None: ...

class AttemptRef(_message.Message):
    __slots__ = ("execution_id", "node_id", "attempt")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    node_id: str
    attempt: int
    def __init__(self, execution_id: _Optional[str] = ..., node_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class ExecuteNodesResponse(_message.Message):
    __slots__ = ("outcomes", "unavailable", "unavailable_reason")
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[NodeOutcome]
    unavailable: _containers.RepeatedCompositeFieldContainer[AttemptRef]
    unavailable_reason: str
    def __init__(self, outcomes: _Optional[_Iterable[_Union[NodeOutcome, _Mapping]]] = ..., unavailable: _Optional[_Iterable[_Union[AttemptRef, _Mapping]]] = ..., unavailable_reason: _Optional[str] = ...) -> None: ...
