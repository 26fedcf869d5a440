"""The tool registry: JSON-Schema described tools, validated before every call.

A tool is a name, a description, a JSON Schema of its arguments (and optionally of its
result), a source (``builtin`` or ``mcp:<server>``) and an async handler. The registry
validates arguments before calling, so handlers only see well-formed input, and answers
with the domain errors the servicer maps to gRPC codes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jsonschema
import jsonschema.protocols

from libs.common.errors import DeadlineExceeded, HeddleError, InvalidArgument, NotFound

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]

#: The idempotency key of the call a handler runs ("" when the caller sent none): the same
#: for a node attempt re-sent after a crash, so a handler with side effects (an MCP server,
#: which gets it in the request's _meta) can deduplicate.
call_idempotency_key: ContextVar[str] = ContextVar("call_idempotency_key", default="")
#: The tenant of the call a handler runs (the default tenant when the caller sent none): a
#: tool over tenant data (knowledge_search) reads only that tenant's.
call_tenant: ContextVar[str] = ContextVar("call_tenant", default="default")


@dataclass
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]
    handler: Handler
    output_schema: dict[str, Any] | None = None
    source: str = "builtin"

    # Compiled once, on the first call: building a Draft 2020-12 validator (its referencing
    # registry, its resolver) on every call was 58 % of CallTool's CPU samples under
    # bench/agent_steps.py. A tool's schemas do not change (an MCP refresh makes new Tools).
    @cached_property
    def input_validator(self) -> jsonschema.protocols.Validator:
        return jsonschema.Draft202012Validator(self.input_schema)

    @cached_property
    def output_validator(self) -> jsonschema.protocols.Validator | None:
        if self.output_schema is None:
            return None
        return jsonschema.Draft202012Validator(self.output_schema)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "source": self.source,
        }


def _path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    # "required" and "additionalProperties" errors sit on the parent: name the field itself.
    required = error.validator_value
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in required if k not in error.instance]  # type: ignore[union-attr]
        parts += missing[:1]
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = set(schema.get("properties", {}))
        extra = [k for k in error.instance if k not in known]
        parts += extra[:1]
    return ".".join(parts)


def argument_problems(
    validator: jsonschema.protocols.Validator, arguments: Any
) -> list[dict[str, str]]:
    """Every way ``arguments`` breaks the validator's schema, as [{"path", "message"}],
    path-sorted."""
    problems = [
        {"path": _path(error), "message": error.message}
        for error in validator.iter_errors(arguments)
    ]
    return sorted(problems, key=lambda p: p["path"])


class ToolRegistry:
    def __init__(self, call_timeout_s: float = 60.0) -> None:
        self._tools: dict[str, Tool] = {}
        self.call_timeout_s = call_timeout_s

    def register(self, tool: Tool) -> None:
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
        self._tools[tool.name] = tool

    def replace_source(self, source: str, tools: list[Tool]) -> None:
        """Swap every tool of one source (an MCP server) for a fresh list."""
        for name in [n for n, t in self._tools.items() if t.source == source]:
            del self._tools[name]
        for tool in tools:
            self._tools[tool.name] = tool

    def list(self) -> list[Tool]:
        return sorted(self._tools.values(), key=lambda t: t.name)

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is None:
            raise NotFound(
                f"unknown tool {name!r}", details={"tool": name, "known": sorted(self._tools)}
            )
        return tool

    async def call(
        self,
        name: str,
        arguments: Any,
        timeout_s: float | None = None,
        idempotency_key: str = "",
        tenant_id: str = "",
    ) -> Any:
        """Validate ``arguments`` against the tool's schema, then run it within the timeout
        (the handler sees idempotency_key in `call_idempotency_key`)."""
        tool = self.get(name)
        if arguments is None:
            arguments = {}
        problems = argument_problems(tool.input_validator, arguments)
        if problems:
            fields = ", ".join(f"{p['path'] or '(arguments)'}: {p['message']}" for p in problems)
            raise InvalidArgument(f"invalid arguments for tool {name!r}: {fields}", problems)
        limit = min(t for t in (timeout_s, self.call_timeout_s) if t is not None)
        call_idempotency_key.set(idempotency_key)
        call_tenant.set(tenant_id or "default")
        try:
            async with asyncio.timeout(limit):
                result = await tool.handler(arguments)
        except TimeoutError as error:
            raise DeadlineExceeded(f"tool {name!r} took longer than {limit:g}s") from error
        if tool.output_validator is not None:
            broken = argument_problems(tool.output_validator, result)
            if broken:
                log.error("tool result breaks its schema", extra={"tool": name, "problems": broken})
                raise HeddleError(f"tool {name!r} returned a result that breaks its schema", broken)
        return result
