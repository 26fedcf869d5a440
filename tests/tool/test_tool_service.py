"""The tool service through real gRPC channels: built-ins, validation, MCP over stdio."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from heddle.v1 import tool_pb2, tool_pb2_grpc
from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route
from tool_testkit import serve_app, stdio_mcp

from libs.common.errors import from_rpc_error
from libs.common.grpcutil import create_channel
from services.node.executors.base import NodeError
from services.node.grpc_clients import GrpcToolClient
from services.tool.builtins import calculate


async def call(stub: Any, name: str, arguments: Any) -> Any:
    reply = await stub.CallTool(
        tool_pb2.CallToolRequest(name=name, arguments_json=json.dumps(arguments).encode()),
        timeout=10,
    )
    return json.loads(reply.result_json) if reply.result_json else None


async def failure(stub: Any, name: str, arguments: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(stub, name, arguments)
    return caught.value


async def test_lists_builtins_with_schemas(tool_service) -> None:
    stub = await tool_service()
    listed = await stub.ListTools(tool_pb2.ListToolsRequest(), timeout=5)
    by_name = {t.name: t for t in listed.tools}
    assert {"calculator", "json_query", "template", "current_time", "http_request"} <= set(by_name)
    calculator = by_name["calculator"]
    assert calculator.source == "builtin"
    assert json.loads(calculator.input_schema_json)["required"] == ["expression"]
    assert json.loads(calculator.output_schema_json)["properties"]["result"] == {"type": "number"}


async def test_calculator(tool_service) -> None:
    stub = await tool_service()
    assert await call(stub, "calculator", {"expression": "2 + 3 * (4 - 1) ** 2 // 5"}) == {
        "result": 7
    }
    assert await call(stub, "calculator", {"expression": "sqrt(16) + -abs(-2) + pi * 0"}) == {
        "result": 2.0
    }
    for bad, why in (
        ("__import__('os').system('x')", "not allowed"),
        ("(1).__class__", "not allowed"),
        ("9 ** 9 ** 9", "exponent"),
        ("1 / 0", "division by zero"),
        ("2 +", "syntax"),
        ("x + 1", "not allowed"),
    ):
        error = await failure(stub, "calculator", {"expression": bad})
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert why in error.details(), (bad, error.details())
        assert from_rpc_error(error).details[0]["path"] == "expression"


def test_calculator_bounds_big_numbers() -> None:
    assert calculate("2 ** 100") == 2**100
    with pytest.raises(Exception, match="too large"):
        calculate("99999 ** 999")
    with pytest.raises(Exception, match="too large"):
        calculate("factorial(500) * factorial(500) * factorial(500)")


async def test_bad_arguments_name_the_field(tool_service) -> None:
    stub = await tool_service()
    error = await failure(stub, "calculator", {"expression": 42})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expression" in error.details()
    assert from_rpc_error(error).details == [
        {"path": "expression", "message": "42 is not of type 'string'"}
    ]
    missing = from_rpc_error(await failure(stub, "json_query", {"data": {}}))
    assert missing.details[0]["path"] == "expression"
    assert "required" in missing.details[0]["message"]
    extra = from_rpc_error(await failure(stub, "current_time", {"tz": "UTC"}))
    assert extra.details[0]["path"] == "tz"
    nested = from_rpc_error(
        await failure(stub, "http_request", {"url": "https://x.example", "headers": {"a": 1}})
    )
    assert nested.details[0]["path"] == "headers.a"


async def test_unknown_tool_is_not_found(tool_service) -> None:
    stub = await tool_service()
    error = await failure(stub, "no_such_tool", {})
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_tool" in error.details()


async def test_json_query_template_and_current_time(tool_service) -> None:
    stub = await tool_service()
    data = {"people": [{"name": "ada", "age": 36}, {"name": "alan", "age": 41}]}
    assert await call(
        stub, "json_query", {"data": data, "expression": "people[?age > `40`].name"}
    ) == {"result": ["alan"]}
    bad = await failure(stub, "json_query", {"data": data, "expression": "people[?"})
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    rendered = await call(
        stub,
        "template",
        {
            "template": "Hi {{ user.name }}, {{ n + 1 }}",
            "context": {"user": {"name": "Ada"}, "n": 1},
        },
    )
    assert rendered == {"result": "Hi Ada, 2"}
    now = await call(stub, "current_time", {"timezone": "Asia/Tokyo"})
    assert now["timezone"] == "Asia/Tokyo" and now["utc_offset"] == "+0900"
    zone = await failure(stub, "current_time", {"timezone": "Mars/Olympus"})
    assert from_rpc_error(zone).details[0]["path"] == "timezone"


@pytest.fixture
async def local_http() -> Any:
    async def hello(request: Any) -> JSONResponse:
        return JSONResponse({"hello": request.query_params.get("who", "world")})

    async def hop(request: Any) -> RedirectResponse:
        return RedirectResponse("/hello?who=redirect", status_code=302)

    app = Starlette(routes=[Route("/hello", hello), Route("/hop", hop)])
    async with serve_app(app) as url:
        yield url


async def test_http_request_obeys_the_allow_list(tool_service, local_http) -> None:
    refused = await tool_service()
    error = await failure(refused, "http_request", {"url": f"{local_http}/hello"})
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "HEDDLE_HTTP_ALLOW_HOSTS" in error.details()

    allowed = await tool_service(http_allow_hosts="127.0.0.1")
    result = await call(
        allowed, "http_request", {"url": f"{local_http}/hello", "params": {"who": "ada"}}
    )
    assert (result["status"], result["json"]) == (200, {"hello": "ada"})
    redirected = await call(allowed, "http_request", {"url": f"{local_http}/hop"})
    assert redirected["json"] == {"hello": "redirect"}


async def test_mcp_stdio_tools_are_listed_and_called(tool_service) -> None:
    stub = await tool_service(mcp_servers=[stdio_mcp("kit")])
    listed = await stub.ListTools(tool_pb2.ListToolsRequest(), timeout=10)
    mcp_tools = {t.name: t for t in listed.tools if t.source == "mcp:kit"}
    assert set(mcp_tools) == {
        "kit.add",
        "kit.shout",
        "kit.fail",
        "kit.crash",
        "kit.idempotency_key",
    }
    assert json.loads(mcp_tools["kit.add"].input_schema_json)["required"] == ["a", "b"]
    assert await call(stub, "kit.add", {"a": 2, "b": 40}) == {"result": 42}
    assert await call(stub, "kit.shout", {"text": "hi"}) == {"result": "HI"}

    bad = from_rpc_error(await failure(stub, "kit.add", {"a": "two", "b": 1}))
    assert bad.details[0]["path"] == "a"  # validated before reaching the MCP server

    failed = await failure(stub, "kit.fail", {"reason": "no luck"})
    assert failed.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no luck" in failed.details()


async def test_a_calls_idempotency_key_reaches_the_mcp_server(tool_service) -> None:
    stub = await tool_service(mcp_servers=[stdio_mcp("kit")])
    keyed = await stub.CallTool(
        tool_pb2.CallToolRequest(
            name="kit.idempotency_key", arguments_json=b"{}", idempotency_key="ex/n/1"
        ),
        timeout=10,
    )
    assert json.loads(keyed.result_json) == {"result": "ex/n/1"}
    assert await call(stub, "kit.idempotency_key", {}) == {"result": ""}


async def test_mcp_server_that_died_is_reconnected(tool_service) -> None:
    stub = await tool_service(mcp_servers=[stdio_mcp("kit")])
    # The channel would replay UNAVAILABLE: use a plain one to see the crash itself.
    async with grpc.aio.insecure_channel(stub.address) as channel:
        plain = tool_pb2_grpc.ToolServiceStub(channel)
        crashed = await failure(plain, "kit.crash", {})
    assert crashed.code() == grpc.StatusCode.UNAVAILABLE
    assert await call(stub, "kit.add", {"a": 1, "b": 1}) == {"result": 2}


async def test_unreachable_mcp_server_does_not_block_builtins(tool_service, tmp_path) -> None:
    broken = {"name": "ghost", "command": str(tmp_path / "missing-binary")}
    stub = await tool_service(mcp_servers=[broken])
    listed = await stub.ListTools(tool_pb2.ListToolsRequest(), timeout=10)
    assert "calculator" in {t.name for t in listed.tools}
    assert not [t for t in listed.tools if t.source == "mcp:ghost"]


async def test_node_tool_client(tool_service) -> None:
    stub = await tool_service()
    channel = create_channel(stub.address)
    try:
        client = GrpcToolClient(channel, deadline_s=5)
        assert await client.call("calculator", {"expression": "6*7"}) == {"result": 42}
        tools = await client.list()
        assert {"name", "description", "input_schema"} <= set(tools[0])
        with pytest.raises(NodeError) as caught:
            await client.call("calculator", {"expression": 1})
        assert caught.value.retryable is False
        assert caught.value.details["details"][0]["path"] == "expression"
        with pytest.raises(NodeError) as missing:
            await client.call("nope", {})
        assert missing.value.type == "NotFoundError"
    finally:
        await channel.close()
