"""Structured logging: one JSON object per line, carrying execution/node/trace ids.

The ids come from context variables that the engine and the node service set around the work
they do, so every log line written inside a node attempt says which one it belongs to.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

from libs.common import jsonutil

execution_id_var: ContextVar[str | None] = ContextVar("execution_id", default=None)
node_id_var: ContextVar[str | None] = ContextVar("node_id", default=None)
attempt_var: ContextVar[int | None] = ContextVar("attempt", default=None)
# The tenant whose work this task does: calls a node makes to other services carry it.
tenant_id_var: ContextVar[str | None] = ContextVar("tenant_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with the ambient execution context."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (
            ("execution_id", execution_id_var),
            ("node_id", node_id_var),
            ("attempt", attempt_var),
        ):
            value = var.get()
            if value is not None:
                entry[key] = value
        trace_id = _current_trace_id()
        if trace_id:
            entry["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return jsonutil.dumps_str(entry)


def _current_trace_id() -> str | None:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry is a dependency
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Send every logger to stderr, as JSON lines (or plain text with fmt="console")."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Access logs of every HTTP/gRPC call drown the signal at INFO.
    for noisy in ("uvicorn.access", "aiormq", "aio_pika", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
