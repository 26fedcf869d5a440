import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("execution_id", "seq", "type", "node_id", "ts", "data_json", "trace_id", "workflow_id", "tenant_id")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    seq: int
    type: str
    node_id: str
    ts: _timestamp_pb2.Timestamp
    data_json: bytes
    trace_id: str
    workflow_id: str
    tenant_id: str
    def __init__(self, execution_id: _Optional[str] = ..., seq: _Optional[int] = ..., type: _Optional[str] = ..., node_id: _Optional[str] = ..., ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., data_json: _Optional[bytes] = ..., trace_id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class TriggerFire(_message.Message):
    __slots__ = ("dedupe_key", "workflow_id", "schedule_id", "scheduled_time", "inputs_json", "source", "tenant_id", "priority")
    DEDUPE_KEY_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_TIME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    dedupe_key: str
    workflow_id: str
    schedule_id: str
    scheduled_time: _timestamp_pb2.Timestamp
    inputs_json: bytes
    source: str
    tenant_id: str
    priority: int
    def __init__(self, dedupe_key: _Optional[str] = ..., workflow_id: _Optional[str] = ..., schedule_id: _Optional[str] = ..., scheduled_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., inputs_json: _Optional[bytes] = ..., source: _Optional[str] = ..., tenant_id: _Optional[str] = ..., priority: _Optional[int] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("execution_id", "node_id", "attempt", "level", "message", "ts", "trace_id", "logger", "service", "fields_json", "tenant_id")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    LOGGER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_JSON_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    node_id: str
    attempt: int
    level: str
    message: str
    ts: _timestamp_pb2.Timestamp
    trace_id: str
    logger: str
    service: str
    fields_json: bytes
    tenant_id: str
    def __init__(self, execution_id: _Optional[str] = ..., node_id: _Optional[str] = ..., attempt: _Optional[int] = ..., level: _Optional[str] = ..., message: _Optional[str] = ..., ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trace_id: _Optional[str] = ..., logger: _Optional[str] = ..., service: _Optional[str] = ..., fields_json: _Optional[bytes] = ..., tenant_id: _Optional[str] = ...) -> None: ...
