"""Custom node types of the e2e worker tests, served by the SDK's `heddle-worker`.

HEDDLE_TEST_WORKER names the worker in outputs; HEDDLE_TEST_STARTS, when set, is a file each
start of acme.e2e_wait is appended to (attempt, idempotency key, worker)."""

from __future__ import annotations

import asyncio
import os

from heddle_sdk import Context, node_type
from pydantic import BaseModel

if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
    # What a user does to see the worker's spans: an exporter for this process. The SDK's span
    # joins the attempt's trace (a child of its span); SimpleSpanProcessor sends it as it ends.
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    _provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "worker")})
    )
    _provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)


class Shouted(BaseModel):
    text: str
    worker: str


@node_type("acme.e2e_shout", title="Shout", category="text", version="1")
async def shout(text: str, ctx: Context) -> Shouted:
    """Upper-case a text."""
    ctx.log.info("shouting", characters=len(text))
    return Shouted(text=text.upper(), worker=os.environ.get("HEDDLE_TEST_WORKER", "?"))


class Waited(BaseModel):
    waited: float
    worker: str


@node_type("acme.e2e_wait", title="Wait", category="testing", version="1")
async def wait(seconds: float, ctx: Context) -> Waited:
    """Sleep, noting each start."""
    starts = os.environ.get("HEDDLE_TEST_STARTS")
    worker = os.environ.get("HEDDLE_TEST_WORKER", "?")
    if starts:
        with open(starts, "a") as handle:  # noqa: ASYNC230 - one short line
            handle.write(f"{ctx.attempt} {ctx.idempotency_key} {worker}\n")
    await asyncio.sleep(seconds)
    return Waited(waited=seconds, worker=worker)
