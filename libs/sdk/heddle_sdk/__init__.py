"""Heddle's Python SDK: custom node types served by workers, a client of the HTTP API, and
workflows as code.

```
from heddle_sdk import Client, Context, Worker, Workflow, node_type
```
"""

from __future__ import annotations

__version__ = "0.2.0"

from heddle_sdk.client import AsyncClient, Client, Event, Execution, ExecutionStarted
from heddle_sdk.context import Context, RecordingSink
from heddle_sdk.errors import (
    APIError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    ExecutionTimeout,
    HeddleError,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
    WorkerError,
)
from heddle_sdk.nodes import NodeError, NodeType, Routed, node_type
from heddle_sdk.worker import Worker
from heddle_sdk.workflow import NodeRef, PortRef, Retry, Workflow

__all__ = [
    "APIError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Context",
    "Event",
    "Execution",
    "ExecutionStarted",
    "ExecutionTimeout",
    "HeddleError",
    "NodeError",
    "NodeRef",
    "NodeType",
    "NotFound",
    "PermissionDenied",
    "PortRef",
    "RateLimited",
    "RecordingSink",
    "Retry",
    "Routed",
    "Unauthenticated",
    "Unavailable",
    "Worker",
    "WorkerError",
    "Workflow",
    "__version__",
    "node_type",
]
