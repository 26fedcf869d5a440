import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from heddle.v1 import common_pb2 as _common_pb2
from heddle.v1 import events_pb2 as _events_pb2
from heddle.v1 import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValidationIssue(_message.Message):
    __slots__ = ("code", "message", "node_id", "edge", "field", "severity")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    node_id: str
    edge: int
    field: str
    severity: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., node_id: _Optional[str] = ..., edge: _Optional[int] = ..., field: _Optional[str] = ..., severity: _Optional[str] = ...) -> None: ...

class ValidateWorkflowRequest(_message.Message):
    __slots__ = ("definition_json", "tenant_id")
    DEFINITION_JSON_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    definition_json: bytes
    tenant_id: str
    def __init__(self, definition_json: _Optional[bytes] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class ValidateWorkflowResponse(_message.Message):
    __slots__ = ("valid", "issues")
    VALID_FIELD_NUMBER: _ClassVar[int]
    ISSUES_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    issues: _containers.RepeatedCompositeFieldContainer[ValidationIssue]
    def __init__(self, valid: bool = ..., issues: _Optional[_Iterable[_Union[ValidationIssue, _Mapping]]] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("id", "name", "version", "description", "definition_json", "created_at", "updated_at", "tenant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    version: int
    description: str
    definition_json: bytes
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[int] = ..., description: _Optional[str] = ..., definition_json: _Optional[bytes] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class CreateWorkflowRequest(_message.Message):
    __slots__ = ("definition_json", "tenant_id", "hidden")
    DEFINITION_JSON_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    definition_json: bytes
    tenant_id: str
    hidden: bool
    def __init__(self, definition_json: _Optional[bytes] = ..., tenant_id: _Optional[str] = ..., hidden: bool = ...) -> None: ...

class UpdateWorkflowRequest(_message.Message):
    __slots__ = ("id", "definition_json", "tenant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_JSON_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    definition_json: bytes
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., definition_json: _Optional[bytes] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class GetWorkflowRequest(_message.Message):
    __slots__ = ("id", "version", "tenant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: int
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[int] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ("page", "tenant_id", "restrict_to_ids", "ids")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RESTRICT_TO_IDS_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    tenant_id: str
    restrict_to_ids: bool
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ..., tenant_id: _Optional[str] = ..., restrict_to_ids: bool = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ("workflows", "page")
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[Workflow]
    page: _common_pb2.PageInfo
    def __init__(self, workflows: _Optional[_Iterable[_Union[Workflow, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageInfo, _Mapping]] = ...) -> None: ...

class DeleteWorkflowRequest(_message.Message):
    __slots__ = ("id", "tenant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class DeleteWorkflowResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartExecutionRequest(_message.Message):
    __slots__ = ("workflow_id", "version", "inputs_json", "idempotency_key", "parent_execution_id", "parent_node_id", "tenant_id", "trigger", "depth", "priority", "reuse_json", "forked_from_execution_id", "forked_from_node", "execution_id")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PARENT_EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    REUSE_JSON_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    version: int
    inputs_json: bytes
    idempotency_key: str
    parent_execution_id: str
    parent_node_id: str
    tenant_id: str
    trigger: str
    depth: int
    priority: int
    reuse_json: bytes
    forked_from_execution_id: str
    forked_from_node: str
    execution_id: str
    def __init__(self, workflow_id: _Optional[str] = ..., version: _Optional[int] = ..., inputs_json: _Optional[bytes] = ..., idempotency_key: _Optional[str] = ..., parent_execution_id: _Optional[str] = ..., parent_node_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., trigger: _Optional[str] = ..., depth: _Optional[int] = ..., priority: _Optional[int] = ..., reuse_json: _Optional[bytes] = ..., forked_from_execution_id: _Optional[str] = ..., forked_from_node: _Optional[str] = ..., execution_id: _Optional[str] = ...) -> None: ...

class StartExecutionResponse(_message.Message):
    __slots__ = ("execution_id", "status", "created")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    status: str
    created: bool
    def __init__(self, execution_id: _Optional[str] = ..., status: _Optional[str] = ..., created: bool = ...) -> None: ...

class RunExecutionRequest(_message.Message):
    __slots__ = ("start", "wait_s", "started_after_s")
    START_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    STARTED_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    start: StartExecutionRequest
    wait_s: float
    started_after_s: float
    def __init__(self, start: _Optional[_Union[StartExecutionRequest, _Mapping]] = ..., wait_s: _Optional[float] = ..., started_after_s: _Optional[float] = ...) -> None: ...

class RunExecutionReply(_message.Message):
    __slots__ = ("started", "finished")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    started: StartExecutionResponse
    finished: Execution
    def __init__(self, started: _Optional[_Union[StartExecutionResponse, _Mapping]] = ..., finished: _Optional[_Union[Execution, _Mapping]] = ...) -> None: ...

class NodeAttempt(_message.Message):
    __slots__ = ("attempt", "status", "started_at", "finished_at", "error")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    status: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error: _common_pb2.ErrorInfo
    def __init__(self, attempt: _Optional[int] = ..., status: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ...) -> None: ...

class NodeRun(_message.Message):
    __slots__ = ("node_id", "node_type", "status", "attempts", "output_json", "error", "started_at", "finished_at", "attempt_history", "waiting_json", "inputs_json", "checkpoint_json", "child_execution_ids")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_HISTORY_FIELD_NUMBER: _ClassVar[int]
    WAITING_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_JSON_FIELD_NUMBER: _ClassVar[int]
    CHILD_EXECUTION_IDS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    node_type: str
    status: str
    attempts: int
    output_json: bytes
    error: _common_pb2.ErrorInfo
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    attempt_history: _containers.RepeatedCompositeFieldContainer[NodeAttempt]
    waiting_json: bytes
    inputs_json: bytes
    checkpoint_json: bytes
    child_execution_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., node_type: _Optional[str] = ..., status: _Optional[str] = ..., attempts: _Optional[int] = ..., output_json: _Optional[bytes] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempt_history: _Optional[_Iterable[_Union[NodeAttempt, _Mapping]]] = ..., waiting_json: _Optional[bytes] = ..., inputs_json: _Optional[bytes] = ..., checkpoint_json: _Optional[bytes] = ..., child_execution_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Execution(_message.Message):
    __slots__ = ("id", "workflow_id", "workflow_version", "status", "inputs_json", "outputs_json", "error", "created_at", "started_at", "finished_at", "nodes", "parent_execution_id", "trigger", "idempotency_key", "tenant_id", "trace_id", "last_seq", "retry_of", "priority", "parent_node_id", "forked_from_execution_id", "forked_from_node")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    PARENT_EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    RETRY_OF_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PARENT_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    id: str
    workflow_id: str
    workflow_version: int
    status: str
    inputs_json: bytes
    outputs_json: bytes
    error: _common_pb2.ErrorInfo
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    nodes: _containers.RepeatedCompositeFieldContainer[NodeRun]
    parent_execution_id: str
    trigger: str
    idempotency_key: str
    tenant_id: str
    trace_id: str
    last_seq: int
    retry_of: str
    priority: int
    parent_node_id: str
    forked_from_execution_id: str
    forked_from_node: str
    def __init__(self, id: _Optional[str] = ..., workflow_id: _Optional[str] = ..., workflow_version: _Optional[int] = ..., status: _Optional[str] = ..., inputs_json: _Optional[bytes] = ..., outputs_json: _Optional[bytes] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[NodeRun, _Mapping]]] = ..., parent_execution_id: _Optional[str] = ..., trigger: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., tenant_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., last_seq: _Optional[int] = ..., retry_of: _Optional[str] = ..., priority: _Optional[int] = ..., parent_node_id: _Optional[str] = ..., forked_from_execution_id: _Optional[str] = ..., forked_from_node: _Optional[str] = ...) -> None: ...

class GetExecutionRequest(_message.Message):
    __slots__ = ("id", "tenant_id", "summary")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    summary: bool
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., summary: bool = ...) -> None: ...

class ListExecutionsRequest(_message.Message):
    __slots__ = ("page", "workflow_id", "status", "tenant_id", "restrict_to_workflows", "workflow_ids", "trigger_prefix", "forked_from_execution_id", "include_hidden", "parent_execution_id")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RESTRICT_TO_WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_IDS_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_PREFIX_FIELD_NUMBER: _ClassVar[int]
    FORKED_FROM_EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HIDDEN_FIELD_NUMBER: _ClassVar[int]
    PARENT_EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    workflow_id: str
    status: str
    tenant_id: str
    restrict_to_workflows: bool
    workflow_ids: _containers.RepeatedScalarFieldContainer[str]
    trigger_prefix: str
    forked_from_execution_id: str
    include_hidden: bool
    parent_execution_id: str
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ..., workflow_id: _Optional[str] = ..., status: _Optional[str] = ..., tenant_id: _Optional[str] = ..., restrict_to_workflows: bool = ..., workflow_ids: _Optional[_Iterable[str]] = ..., trigger_prefix: _Optional[str] = ..., forked_from_execution_id: _Optional[str] = ..., include_hidden: bool = ..., parent_execution_id: _Optional[str] = ...) -> None: ...

class ListExecutionsResponse(_message.Message):
    __slots__ = ("executions", "page")
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[Execution]
    page: _common_pb2.PageInfo
    def __init__(self, executions: _Optional[_Iterable[_Union[Execution, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageInfo, _Mapping]] = ...) -> None: ...

class ControlExecutionRequest(_message.Message):
    __slots__ = ("id", "action", "tenant_id")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[ControlExecutionRequest.Action]
        CANCEL: _ClassVar[ControlExecutionRequest.Action]
        PAUSE: _ClassVar[ControlExecutionRequest.Action]
        RESUME: _ClassVar[ControlExecutionRequest.Action]
    ACTION_UNSPECIFIED: ControlExecutionRequest.Action
    CANCEL: ControlExecutionRequest.Action
    PAUSE: ControlExecutionRequest.Action
    RESUME: ControlExecutionRequest.Action
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    action: ControlExecutionRequest.Action
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., action: _Optional[_Union[ControlExecutionRequest.Action, str]] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class SubmitInputRequest(_message.Message):
    __slots__ = ("id", "node_id", "data_json", "tenant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    node_id: str
    data_json: bytes
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., node_id: _Optional[str] = ..., data_json: _Optional[bytes] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class RetryExecutionRequest(_message.Message):
    __slots__ = ("id", "tenant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class WaitExecutionRequest(_message.Message):
    __slots__ = ("id", "tenant_id", "summary")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    summary: bool
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., summary: bool = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("execution_id", "after_seq", "tenant_id")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    after_seq: int
    tenant_id: str
    def __init__(self, execution_id: _Optional[str] = ..., after_seq: _Optional[int] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class FireTriggerRequest(_message.Message):
    __slots__ = ("fire",)
    FIRE_FIELD_NUMBER: _ClassVar[int]
    fire: _events_pb2.TriggerFire
    def __init__(self, fire: _Optional[_Union[_events_pb2.TriggerFire, _Mapping]] = ...) -> None: ...

class FireTriggerResponse(_message.Message):
    __slots__ = ("execution_ids",)
    EXECUTION_IDS_FIELD_NUMBER: _ClassVar[int]
    execution_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, execution_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SecretInfo(_message.Message):
    __slots__ = ("name", "created_at", "updated_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PutSecretRequest(_message.Message):
    __slots__ = ("tenant_id", "name", "value")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    value: str
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class PutSecretResponse(_message.Message):
    __slots__ = ("secret", "created")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    secret: SecretInfo
    created: bool
    def __init__(self, secret: _Optional[_Union[SecretInfo, _Mapping]] = ..., created: bool = ...) -> None: ...

class ListSecretsRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListSecretsResponse(_message.Message):
    __slots__ = ("secrets",)
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    secrets: _containers.RepeatedCompositeFieldContainer[SecretInfo]
    def __init__(self, secrets: _Optional[_Iterable[_Union[SecretInfo, _Mapping]]] = ...) -> None: ...

class DeleteSecretRequest(_message.Message):
    __slots__ = ("tenant_id", "name")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteSecretResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
