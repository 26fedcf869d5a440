"""What a running node function sees of its attempt: ids, secrets, logs, progress, cancellation.

A `Context` is handed to the function when it declares a parameter annotated `Context`. Its
methods are safe to call from the function's thread (a plain `def` runs in a thread pool).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

LOG_LEVELS = ("debug", "info", "warning", "error")


class AttemptSink(Protocol):
    """Where a context's logs, progress and streamed text go (the worker's stream)."""

    def log(self, level: str, message: str, fields: Mapping[str, Any]) -> None: ...

    def progress(self, fraction: float, message: str) -> None: ...

    def chunk(self, text: str) -> None: ...


@dataclass
class RecordingSink:
    """A sink that keeps everything, for running a node function in a unit test."""

    logs: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    progress_reports: list[tuple[float, str]] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)

    def log(self, level: str, message: str, fields: Mapping[str, Any]) -> None:
        self.logs.append((level, message, dict(fields)))

    def progress(self, fraction: float, message: str) -> None:
        self.progress_reports.append((fraction, message))

    def chunk(self, text: str) -> None:
        self.chunks.append(text)


class NodeLogger:
    """`ctx.log("text")` or `ctx.log.warning("text", rows=3)`: records shipped to the log
    service with the attempt's execution, node and attempt ids."""

    def __init__(self, sink: AttemptSink) -> None:
        self._sink = sink

    def __call__(self, message: str, level: str = "info", **fields: Any) -> None:
        if level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
        self._sink.log(level, message, fields)

    def debug(self, message: str, **fields: Any) -> None:
        self(message, "debug", **fields)

    def info(self, message: str, **fields: Any) -> None:
        self(message, "info", **fields)

    def warning(self, message: str, **fields: Any) -> None:
        self(message, "warning", **fields)

    def error(self, message: str, **fields: Any) -> None:
        self(message, "error", **fields)


class Context:
    """One attempt of one node, as its function sees it."""

    def __init__(
        self,
        *,
        execution_id: str = "",
        workflow_id: str = "",
        node_id: str = "",
        node_type: str = "",
        attempt: int = 1,
        idempotency_key: str = "",
        tenant_id: str = "",
        traceparent: str = "",
        timeout_s: float | None = None,
        secrets: Mapping[str, str] | None = None,
        sink: AttemptSink | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.workflow_id = workflow_id
        self.node_id = node_id
        self.node_type = node_type
        #: 1 for the first attempt; a retry counts up.
        self.attempt = attempt
        #: The same across re-sends of an attempt whose outcome was lost: pass it to external
        #: systems so a repeated call does its work once.
        self.idempotency_key = idempotency_key
        self.tenant_id = tenant_id
        #: W3C trace context of the attempt's span.
        self.traceparent = traceparent
        self.timeout_s = timeout_s
        #: The tenant's secrets that the node's params reference, by name.
        self.secrets: Mapping[str, str] = dict(secrets or {})
        self.sink: AttemptSink = sink if sink is not None else RecordingSink()
        self.log = NodeLogger(self.sink)
        self.started_at = time.time()
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        """True once the attempt was cancelled (or timed out). An `async def` is also
        cancelled the asyncio way; a plain `def` in a thread should check this and return."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Mark the attempt cancelled (the worker does this; tests may too)."""
        self._cancelled.set()

    def heartbeat(self, progress: float | None = None, message: str = "") -> None:
        """Report that long work goes on, optionally how far (0..1) and what it does now.

        The worker heartbeats on its own while it is connected; this adds progress to it."""
        fraction = -1.0 if progress is None else min(max(float(progress), 0.0), 1.0)
        self.sink.progress(fraction, message)

    def stream(self, text: str) -> None:
        """Stream a piece of output (e.g. generated text) as the node's progress events."""
        if text:
            self.sink.chunk(text)
