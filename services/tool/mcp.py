"""MCP servers' tools in the registry, as ``<server>.<tool>`` with source ``mcp:<server>``.

Each configured server (stdio command or streamable-HTTP URL) gets one long-lived
ClientSession, held open by a background task (the SDK's transports are anyio context
managers that must be entered and left in one task). A server that cannot be reached at
start-up is listed again on the next ListTools; a connection that died is dropped, the
call that saw it fails as Unavailable (retryable), and the next call reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from contextlib import AsyncExitStack
from typing import Any

from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from libs.common.errors import DeadlineExceeded, FailedPrecondition, Unavailable
from services.tool.registry import Tool, ToolRegistry, call_idempotency_key
from services.tool.settings import McpServerConfig

log = logging.getLogger(__name__)

#: Where a call's idempotency key goes in an MCP request's `_meta` (MCP's prefix/name form).
IDEMPOTENCY_META_KEY = "io.heddle/idempotency-key"


class McpConnection:
    """One MCP server: connects lazily, reconnects after the connection died."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self._session: ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    async def session(self) -> ClientSession:
        async with self._lock:
            if self._session is not None and self._task is not None and not self._task.done():
                return self._session
            await self._drop()
            ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._hold(ready), name=f"mcp:{self.name}")
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    self._session = await asyncio.shield(ready)
            except BaseException as error:
                await self._drop()
                if isinstance(error, Exception):
                    raise Unavailable(
                        f"MCP server {self.name!r} is unreachable: {error or type(error).__name__}"
                    ) from error
                raise
            log.info("MCP server connected", extra={"mcp_server": self.name})
            return self._session

    async def _hold(self, ready: asyncio.Future[ClientSession]) -> None:
        try:
            async with AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport(stack))
                session = await stack.enter_async_context(
                    ClientSession(read, write, read_timeout_seconds=self.config.timeout_s)
                )
                await session.initialize()
                ready.set_result(session)
                await self._stop.wait()
        except Exception as error:
            if not ready.done():
                ready.set_exception(error)
            else:
                log.warning(
                    "MCP connection ended", extra={"mcp_server": self.name, "error": str(error)}
                )
        finally:
            if not ready.done():
                ready.set_exception(ConnectionError("connection closed during start-up"))

    def _transport(self, stack: AsyncExitStack) -> Any:
        config = self.config
        if config.command is not None:
            return stdio_client(
                StdioServerParameters(
                    command=config.command, args=config.args, env=config.env or None, cwd=config.cwd
                )
            )
        assert config.url is not None
        client = create_mcp_http_client(headers=config.headers) if config.headers else None
        if client is not None:
            stack.push_async_callback(client.aclose)
        return streamable_http_client(config.url, http_client=client)

    async def _drop(self) -> None:
        self._session = None
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            async with asyncio.timeout(5):
                await task
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def list_tools(self) -> list[Any]:
        session = await self.session()
        tools: list[Any] = []
        cursor: str | None = None
        while True:
            params = {"cursor": cursor} if cursor else None
            result = await self._guard(
                session.list_tools(params=params) if params else session.list_tools()  # type: ignore[arg-type]
            )
            tools += result.tools
            cursor = getattr(result, "next_cursor", None)
            if not cursor:
                return tools

    async def call(self, tool: str, arguments: dict[str, Any], idempotency_key: str = "") -> Any:
        session = await self.session()
        # MCP has no idempotency field: the key travels in the request's _meta.
        meta = {IDEMPOTENCY_META_KEY: idempotency_key} if idempotency_key else None
        result = await self._guard(session.call_tool(tool, arguments, meta=meta))  # type: ignore[arg-type]
        content = [_content(item) for item in result.content or []]
        if result.is_error:
            text = " ".join(c if isinstance(c, str) else str(c) for c in content)
            raise FailedPrecondition(
                f"MCP tool {self.name}.{tool} reported an error: {text}",
                {"tool": f"{self.name}.{tool}", "content": content},
            )
        if result.structured_content is not None:
            return result.structured_content
        if len(content) == 1:
            return content[0]
        return content

    async def _guard(self, operation: Any) -> Any:
        try:
            return await operation
        except MCPError as error:
            code = getattr(error, "code", None)
            if code == CONNECTION_CLOSED:
                await self.close()  # the next call reconnects
                raise Unavailable(f"MCP server {self.name!r} closed the connection") from error
            if code == REQUEST_TIMEOUT:
                raise DeadlineExceeded(f"MCP server {self.name!r} timed out") from error
            raise FailedPrecondition(f"MCP server {self.name!r}: {error}") from error
        except (OSError, EOFError) as error:
            await self.close()
            raise Unavailable(f"MCP server {self.name!r}: {error}") from error


def _content(item: Any) -> Any:
    if getattr(item, "type", None) == "text":
        text = item.text
        try:
            return json.loads(text)
        except ValueError:
            return text
    return item.model_dump(mode="json", exclude_none=True)


class McpTools:
    """Keeps the registry's ``mcp:<server>`` tools in step with the servers."""

    def __init__(self, registry: ToolRegistry, servers: list[McpServerConfig]) -> None:
        self.registry = registry
        self.connections = {config.name: McpConnection(config) for config in servers}
        self.listed: set[str] = set()

    async def refresh(self, server: str) -> None:
        connection = self.connections[server]
        tools = await connection.list_tools()
        self.registry.replace_source(
            f"mcp:{server}",
            [
                Tool(
                    name=f"{server}.{tool.name}",
                    description=tool.description or "",
                    input_schema=tool.input_schema or {"type": "object"},
                    output_schema=tool.output_schema,
                    source=f"mcp:{server}",
                    handler=_caller(connection, tool.name),
                )
                for tool in tools
            ],
        )
        self.listed.add(server)
        log.info("MCP tools listed", extra={"mcp_server": server, "count": len(tools)})

    async def refresh_missing(self) -> None:
        """List the servers that could not be listed before; failures are only logged."""
        missing = [name for name in self.connections if name not in self.listed]
        results = await asyncio.gather(*(self.refresh(n) for n in missing), return_exceptions=True)
        for name, result in zip(missing, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "MCP server unavailable", extra={"mcp_server": name, "error": str(result)}
                )

    async def close(self) -> None:
        for connection in self.connections.values():
            await connection.close()


def _caller(connection: McpConnection, tool: str) -> Any:
    async def call(arguments: dict[str, Any]) -> Any:
        return await connection.call(tool, arguments, call_idempotency_key.get())

    return call
