from . import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerMessage(_message.Message):
    __slots__ = ("register", "outcome", "heartbeat", "log", "chunk", "drain", "outcomes")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    register: Register
    outcome: WorkerOutcome
    heartbeat: Heartbeat
    log: WorkerLog
    chunk: TextChunk
    drain: Drain
    outcomes: OutcomeBatch
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., outcome: _Optional[_Union[WorkerOutcome, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., log: _Optional[_Union[WorkerLog, _Mapping]] = ..., chunk: _Optional[_Union[TextChunk, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., outcomes: _Optional[_Union[OutcomeBatch, _Mapping]] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("registered", "attempt", "cancel", "attempts")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    attempt: Attempt
    cancel: _node_pb2.AttemptRef
    attempts: AttemptBatch
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., attempt: _Optional[_Union[Attempt, _Mapping]] = ..., cancel: _Optional[_Union[_node_pb2.AttemptRef, _Mapping]] = ..., attempts: _Optional[_Union[AttemptBatch, _Mapping]] = ...) -> None: ...

class AttemptBatch(_message.Message):
    __slots__ = ("attempts",)
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    def __init__(self, attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ...) -> None: ...

class OutcomeBatch(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[WorkerOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[WorkerOutcome, _Mapping]]] = ...) -> None: ...

class CustomNodeType(_message.Message):
    __slots__ = ("type", "title", "category", "description", "version", "params_schema_json", "input_schema_json", "output_schema_json", "input_ports", "list_input_ports", "output_ports")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUT_PORTS_FIELD_NUMBER: _ClassVar[int]
    LIST_INPUT_PORTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PORTS_FIELD_NUMBER: _ClassVar[int]
    type: str
    title: str
    category: str
    description: str
    version: str
    params_schema_json: bytes
    input_schema_json: bytes
    output_schema_json: bytes
    input_ports: _containers.RepeatedScalarFieldContainer[str]
    list_input_ports: _containers.RepeatedScalarFieldContainer[str]
    output_ports: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type: _Optional[str] = ..., title: _Optional[str] = ..., category: _Optional[str] = ..., description: _Optional[str] = ..., version: _Optional[str] = ..., params_schema_json: _Optional[bytes] = ..., input_schema_json: _Optional[bytes] = ..., output_schema_json: _Optional[bytes] = ..., input_ports: _Optional[_Iterable[str]] = ..., list_input_ports: _Optional[_Iterable[str]] = ..., output_ports: _Optional[_Iterable[str]] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("worker_name", "node_types", "max_concurrency", "sdk_version", "batches")
    WORKER_NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    worker_name: str
    node_types: _containers.RepeatedCompositeFieldContainer[CustomNodeType]
    max_concurrency: int
    sdk_version: str
    batches: bool
    def __init__(self, worker_name: _Optional[str] = ..., node_types: _Optional[_Iterable[_Union[CustomNodeType, _Mapping]]] = ..., max_concurrency: _Optional[int] = ..., sdk_version: _Optional[str] = ..., batches: bool = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("worker_id", "tenant_id", "heartbeat_interval_s", "heartbeat_timeout_s", "batches")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    tenant_id: str
    heartbeat_interval_s: float
    heartbeat_timeout_s: float
    batches: bool
    def __init__(self, worker_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ..., heartbeat_timeout_s: _Optional[float] = ..., batches: bool = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("execution_id", "workflow_id", "node_id", "node_type", "attempt", "idempotency_key", "params_json", "inputs_json", "timeout_s", "tenant_id", "traceparent", "secrets_json", "type_version")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    SECRETS_JSON_FIELD_NUMBER: _ClassVar[int]
    TYPE_VERSION_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    workflow_id: str
    node_id: str
    node_type: str
    attempt: int
    idempotency_key: str
    params_json: bytes
    inputs_json: bytes
    timeout_s: float
    tenant_id: str
    traceparent: str
    secrets_json: bytes
    type_version: str
    def __init__(self, execution_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., node_id: _Optional[str] = ..., node_type: _Optional[str] = ..., attempt: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., params_json: _Optional[bytes] = ..., inputs_json: _Optional[bytes] = ..., timeout_s: _Optional[float] = ..., tenant_id: _Optional[str] = ..., traceparent: _Optional[str] = ..., secrets_json: _Optional[bytes] = ..., type_version: _Optional[str] = ...) -> None: ...

class WorkerOutcome(_message.Message):
    __slots__ = ("outcome",)
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    outcome: _node_pb2.NodeOutcome
    def __init__(self, outcome: _Optional[_Union[_node_pb2.NodeOutcome, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("progress",)
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    progress: _containers.RepeatedCompositeFieldContainer[AttemptProgress]
    def __init__(self, progress: _Optional[_Iterable[_Union[AttemptProgress, _Mapping]]] = ...) -> None: ...

class AttemptProgress(_message.Message):
    __slots__ = ("attempt", "fraction", "message")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    attempt: _node_pb2.AttemptRef
    fraction: float
    message: str
    def __init__(self, attempt: _Optional[_Union[_node_pb2.AttemptRef, _Mapping]] = ..., fraction: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class WorkerLog(_message.Message):
    __slots__ = ("attempt", "level", "message", "at", "fields_json")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_JSON_FIELD_NUMBER: _ClassVar[int]
    attempt: _node_pb2.AttemptRef
    level: str
    message: str
    at: float
    fields_json: bytes
    def __init__(self, attempt: _Optional[_Union[_node_pb2.AttemptRef, _Mapping]] = ..., level: _Optional[str] = ..., message: _Optional[str] = ..., at: _Optional[float] = ..., fields_json: _Optional[bytes] = ...) -> None: ...

class TextChunk(_message.Message):
    __slots__ = ("attempt", "delta")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    attempt: _node_pb2.AttemptRef
    delta: str
    def __init__(self, attempt: _Optional[_Union[_node_pb2.AttemptRef, _Mapping]] = ..., delta: _Optional[str] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
