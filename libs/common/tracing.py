"""OpenTelemetry set-up and the W3C trace-context helpers every service shares.

One `TracerProvider` per process, built by `configure_tracing` (each service's main(), or the
embedded stack once for all of them). The exporter follows the standard OTEL_ variables:
`OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` → OTLP/gRPC through a batching processor (unless
`OTEL_TRACES_EXPORTER=none`); `OTEL_TRACES_EXPORTER=console` → stdout; otherwise nothing is
exported, nor even recorded, but spans still get real ids so that trace ids appear in logs
and events. The sampler and the OTLP options (headers, timeout, ...) come from their OTEL_
variables too; at high throughput, sample (`parentbased_traceidratio`).

Every span carries `heddle.service`: the service whose tracer made it or, for shared code
(gRPC clients), that of its parent; in the embedded mode, where one process runs them all,
that is what tells the services apart.

Context crosses processes as a `traceparent` string: in gRPC metadata, in broker message
headers, in `NodeTask.traceparent`, and in `executions.trace_parent` (the root of an
execution's trace, so that a replica taking an execution over continues the same trace).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

SERVICE_ATTRIBUTE = "heddle.service"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_SCOPE_PREFIX = "heddle."
_PROPAGATOR = TraceContextTextMapPropagator()
_SERVICE_KEY = otel_context.create_key("heddle.service")
_lock = threading.Lock()
_provider: TracerProvider | None = None


class _ServiceAttribution(SpanProcessor):
    """Sets `heddle.service` on every span: from the tracer's scope (`heddle.<service>`), else
    as given, else from a local parent span, else from the context (see `continue_trace`),
    else the process's service.name."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        scope = span.instrumentation_scope
        if scope is not None and scope.name.startswith(_SCOPE_PREFIX):
            span.set_attribute(SERVICE_ATTRIBUTE, scope.name[len(_SCOPE_PREFIX) :])
            return
        if span.attributes and SERVICE_ATTRIBUTE in span.attributes:
            return
        parent = trace.get_current_span(parent_context)
        attributes = getattr(parent, "attributes", None)
        if attributes and SERVICE_ATTRIBUTE in attributes:
            span.set_attribute(SERVICE_ATTRIBUTE, attributes[SERVICE_ATTRIBUTE])
            return
        service = otel_context.get_value(_SERVICE_KEY, parent_context)
        if not isinstance(service, str):
            service = str(span.resource.attributes["service.name"])
        span.set_attribute(SERVICE_ATTRIBUTE, service)


class _Processors(SpanProcessor):
    """The processors added after start-up (tests' in-memory exporters); removable, unlike
    those of the SDK's provider."""

    def __init__(self) -> None:
        self.processors: tuple[SpanProcessor, ...] = ()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for processor in self.processors:
            processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for processor in self.processors:
            processor.on_end(span)

    def shutdown(self) -> None:
        for processor in self.processors:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self.processors)


_extra = _Processors()
_DROP = SamplingResult(Decision.DROP)
_exporter: SpanProcessor | None = None


class _RecordWhenRead(Sampler):
    """Recording a span costs tens of µs, and with no exporter and no processor nothing would
    read it: then spans are not recorded but still get real ids (trace ids reach logs and
    events, and the context propagates). Otherwise the configured sampler decides
    (OTEL_TRACES_SAMPLER; by default parent-based, always on)."""

    def __init__(self, configured: Sampler) -> None:
        self._configured = configured

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: trace.SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if not (_exporter or _extra.processors):
            return _DROP
        return self._configured.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RecordWhenRead{{{self._configured.get_description()}}}"


def spans_wanted() -> bool:
    """True when something reads spans (an exporter or a test's processor). When false, hot
    paths skip making per-call and per-node spans and only pass the trace context along:
    trace ids still reach events and logs, and a span costs tens of µs even unrecorded."""
    return bool(_exporter or _extra.processors)


def configure_tracing(service_name: str, *, processor: SpanProcessor | None = None) -> None:
    """Install the process's tracer provider (once; later calls only add `processor`).

    `processor` receives every span from now on (tests pass a SimpleSpanProcessor over an
    InMemorySpanExporter); `remove_span_processor` takes it out again.
    """
    global _provider, _exporter
    with _lock:
        if _provider is None:
            # OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) wins if set.
            named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
                "OTEL_RESOURCE_ATTRIBUTES", ""
            )
            attributes = {} if named else {"service.name": service_name}
            # The sampler the SDK would build from OTEL_TRACES_SAMPLER(_ARG).
            configured = TracerProvider(shutdown_on_exit=False).sampler
            provider = TracerProvider(
                resource=Resource.create(attributes), sampler=_RecordWhenRead(configured)
            )
            provider.add_span_processor(_ServiceAttribution())
            provider.add_span_processor(_extra)
            _exporter = _exporter_from_environment()
            if _exporter is not None:
                provider.add_span_processor(_exporter)
            trace.set_tracer_provider(provider)
            _provider = provider
        if processor is not None and processor not in _extra.processors:
            _extra.processors = (*_extra.processors, processor)


def remove_span_processor(processor: SpanProcessor) -> None:
    """Stop sending spans to a processor given to `configure_tracing`."""
    with _lock:
        _extra.processors = tuple(p for p in _extra.processors if p is not processor)


def _exporter_from_environment() -> SpanProcessor | None:
    kind = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if kind == "console":
        return BatchSpanProcessor(ConsoleSpanExporter())
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if kind in ("", "otlp") and endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return BatchSpanProcessor(OTLPSpanExporter())
    return None


def tracer(service: str) -> trace.Tracer:
    """The tracer of a service (`heddle.<service>`; its spans get `heddle.service`) or of a
    shared module (any other name; its spans inherit `heddle.service` from their parent)."""
    name = service if "." in service else _SCOPE_PREFIX + service
    return trace.get_tracer(name)


def extract_context(carrier: Mapping[str, str] | Iterable[tuple[str, Any]]) -> Context | None:
    """The remote parent in carrier (headers, or gRPC metadata pairs); None without one."""
    if not isinstance(carrier, Mapping):
        carrier = {key: value for key, value in carrier if key in (TRACEPARENT, TRACESTATE)}
    traceparent = carrier.get(TRACEPARENT)
    if not traceparent:
        return None
    if TRACESTATE not in carrier:
        return _parse_traceparent(traceparent)
    context = _PROPAGATOR.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def _parse_traceparent(traceparent: str) -> Context | None:
    # The propagator's regex and trace-state handling cost several times this, and a
    # traceparent is parsed for every call and every node attempt.
    version, _, rest = traceparent.partition("-")
    trace_hex, _, rest = rest.partition("-")
    span_hex, _, flags_hex = rest.partition("-")
    if (
        len(version) != 2
        or version == "ff"
        or len(trace_hex) != 32
        or len(span_hex) != 16
        or len(flags_hex) < 2
        or (version == "00" and len(flags_hex) != 2)
    ):
        return None
    try:
        int(version, 16)
        trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
        flags = trace.TraceFlags(int(flags_hex[:2], 16))
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    parent = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def current_traceparent(span: trace.Span | None = None) -> str:
    """The traceparent of span (default: the current span); "" when there is none."""
    ids = (span or trace.get_current_span()).get_span_context()
    if not ids.is_valid:
        return ""
    return f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"


def trace_id_of(span: trace.Span) -> str:
    """The 32-hex trace id of span; "" when it has none."""
    span_context = span.get_span_context()
    return f"{span_context.trace_id:032x}" if span_context.is_valid else ""


@functools.lru_cache(maxsize=4096)
def context_from_traceparent(traceparent: str) -> Context | None:
    """A context whose parent is the span traceparent names; None when it is empty/invalid.

    Passing None as a span's `context` makes it a child of the current span. Cached: the
    same traceparent (an execution's, when nobody reads spans) comes with every attempt,
    and a Context is immutable.
    """
    if not traceparent:
        return None
    return extract_context({TRACEPARENT: traceparent})


def continue_trace(traceparent: str, service: str) -> None:
    """Make the current context, a task's own, a child of traceparent (if any) on behalf of
    service: spans started in it by shared code (gRPC clients) say `heddle.service=service`.

    For a long-lived task that works for one trace, e.g. an execution's runner.
    """
    context = context_from_traceparent(traceparent) or otel_context.get_current()
    otel_context.attach(otel_context.set_value(_SERVICE_KEY, service, context))
