"""The built-in tools: http_request, json_query, calculator, template, current_time."""

from __future__ import annotations

import ast
import json
import math
import operator
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import jmespath
import jmespath.exceptions

from libs.common import expressions, jsonutil, netguard
from libs.common.errors import DeadlineExceeded, InvalidArgument, PermissionDenied, Unavailable
from services.tool.registry import Tool, ToolRegistry
from services.tool.settings import ToolSettings


def _bad(path: str, message: str) -> InvalidArgument:
    return InvalidArgument(message, [{"path": path, "message": message}])


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


# ---------------------------------------------------------------------------- calculator

MAX_EXPRESSION_CHARS = 1000
MAX_NODES = 200
MAX_INT_BITS = 4096
MAX_EXPONENT = 1000

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log2": math.log2,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "hypot": math.hypot,
    "floor": math.floor,
    "ceil": math.ceil,
    "factorial": lambda n: math.factorial(_bounded_factorial(n)),
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _bounded_factorial(n: Any) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 500:
        raise ValueError("factorial takes an integer between 0 and 500")
    return n


def _check_size(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("only numbers are allowed")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError("number too large")
    return value


def _power(base: Any, exponent: Any) -> Any:
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError(f"exponent larger than {MAX_EXPONENT}")
    whole = isinstance(base, int) and isinstance(exponent, int) and exponent > 0
    if whole and base.bit_length() * exponent > MAX_INT_BITS:
        raise ValueError("number too large")
    return operator.pow(base, exponent)


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        return _check_size(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(left, right))
        return _check_size(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _check_size(_FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args)))
    allowed = ", ".join(sorted([*_FUNCTIONS, *_CONSTANTS]))
    raise ValueError(f"{type(node).__name__} is not allowed (numbers, + - * / // % **, {allowed})")


def calculate(expression: str) -> int | float:
    """Evaluate arithmetic safely: numbers, operators, parentheses, a few math functions."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise _bad("expression", f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise _bad("expression", f"syntax error: {error.msg}") from error
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise _bad("expression", "expression too complex")
    try:
        result = _evaluate(tree)
    except ZeroDivisionError as error:
        raise _bad("expression", "division by zero") from error
    except (ValueError, TypeError, OverflowError) as error:
        raise _bad("expression", str(error)) from error
    if isinstance(result, float) and not math.isfinite(result):
        raise _bad("expression", "result is not a finite number")
    return result


async def _calculator(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"result": calculate(arguments["expression"])}


# ---------------------------------------------------------------------------- json_query


async def _json_query(arguments: dict[str, Any]) -> dict[str, Any]:
    try:
        compiled = jmespath.compile(arguments["expression"])
    except jmespath.exceptions.JMESPathError as error:
        raise _bad("expression", f"invalid JMESPath: {error}") from error
    try:
        return {"result": compiled.search(arguments.get("data"))}
    except jmespath.exceptions.JMESPathError as error:
        raise _bad("expression", str(error)) from error


# ---------------------------------------------------------------------------- template


async def _template(arguments: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"result": expressions.render(arguments["template"], arguments.get("context", {}))}
    except expressions.ExpressionError as error:
        raise _bad("template", str(error)) from error


# ---------------------------------------------------------------------------- current_time


async def _current_time(arguments: dict[str, Any]) -> dict[str, Any]:
    name = arguments.get("timezone", "UTC")
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise _bad("timezone", f"unknown IANA time zone {name!r}") from error
    now = datetime.now(tz=zone)
    return {
        "iso": now.isoformat(),
        "timezone": name,
        "unix": now.timestamp(),
        "date": now.date().isoformat(),
        "time": now.time().isoformat(timespec="seconds"),
        "weekday": now.strftime("%A"),
        "utc_offset": now.strftime("%z"),
    }


# ---------------------------------------------------------------------------- http_request


class HttpTool:
    """http_request: every URL, redirects included, is checked against the address policy."""

    def __init__(self, settings: ToolSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client

    async def __call__(self, arguments: dict[str, Any]) -> dict[str, Any]:
        method = arguments.get("method", "GET").upper()
        url = arguments["url"]
        content: bytes | None = None
        headers = dict(arguments.get("headers") or {})
        if "json" in arguments:
            content = jsonutil.dumps(arguments["json"]) or b"null"
            headers.setdefault("content-type", "application/json")
        elif "body" in arguments:
            content = str(arguments["body"]).encode()
        timeout = float(arguments.get("timeout_s") or self.settings.http_timeout_s)
        for _ in range(self.settings.http_max_redirects + 1):
            await self._check(url)
            try:
                response = await self._send(method, url, headers, content, timeout, arguments)
            except httpx.TimeoutException as error:
                raise DeadlineExceeded(f"http_request to {url} timed out") from error
            except httpx.HTTPError as error:
                raise Unavailable(f"http_request to {url} failed: {error}") from error
            if response["status"] in (301, 302, 303, 307, 308) and response.get("location"):
                url = str(httpx.URL(url).join(response["location"]))
                if response["status"] in (301, 302, 303) and method != "HEAD":
                    method, content = "GET", None
                continue
            response.pop("location", None)
            return response
        raise Unavailable(f"http_request: more than {self.settings.http_max_redirects} redirects")

    async def _check(self, url: str) -> None:
        try:
            await netguard.check_url_allowed_async(url, self.settings.http_allow_hosts)
        except netguard.ForbiddenAddressError as error:
            raise PermissionDenied(str(error), [{"path": "url", "message": str(error)}]) from error
        except OSError as error:
            raise Unavailable(f"cannot resolve {url}: {error}") from error

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes | None,
        timeout_s: float,
        arguments: dict[str, Any],
    ) -> dict[str, Any]:
        limit = self.settings.http_max_response_bytes
        request = self.client.build_request(
            method,
            url,
            headers=headers,
            content=content,
            params=arguments.get("params"),
            timeout=timeout_s,
        )
        response = await self.client.send(request, stream=True)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise InvalidArgument(f"response body larger than {limit} bytes")
        finally:
            await response.aclose()
        text = body.decode(response.encoding or "utf-8", errors="replace")
        parsed: Any = None
        if "json" in response.headers.get("content-type", ""):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        return {
            "status": response.status_code,
            "headers": dict(response.headers),
            "body": text,
            "json": parsed,
            "location": response.headers.get("location"),
        }


# ---------------------------------------------------------------------------- registration


def register_builtins(
    registry: ToolRegistry, settings: ToolSettings, http: httpx.AsyncClient
) -> None:
    number = {"type": "number"}
    registry.register(
        Tool(
            name="calculator",
            description="Evaluate an arithmetic expression: numbers, + - * / // % ** "
            "(bounded), parentheses, unary minus, pi, e, tau and the functions "
            + ", ".join(sorted(_FUNCTIONS))
            + ".",
            input_schema=_object(
                {"expression": {"type": "string", "minLength": 1, "description": "e.g. 2*(3+4)"}},
                ["expression"],
            ),
            output_schema=_object({"result": number}, ["result"]),
            handler=_calculator,
        )
    )
    registry.register(
        Tool(
            name="json_query",
            description="Query JSON data with a JMESPath expression (https://jmespath.org).",
            input_schema=_object(
                {
                    "data": {"description": "The JSON value to query."},
                    "expression": {"type": "string", "minLength": 1},
                },
                ["data", "expression"],
            ),
            output_schema=_object({"result": {}}, ["result"]),
            handler=_json_query,
        )
    )
    registry.register(
        Tool(
            name="template",
            description="Render a template ({{ name }} references, filters) against a context.",
            input_schema=_object(
                {
                    "template": {"description": "A string, or a list/object of strings."},
                    "context": {"type": "object", "default": {}},
                },
                ["template"],
            ),
            output_schema=_object({"result": {}}, ["result"]),
            handler=_template,
        )
    )
    registry.register(
        Tool(
            name="current_time",
            description="The current date and time in an IANA time zone (default UTC).",
            input_schema=_object(
                {"timezone": {"type": "string", "default": "UTC", "examples": ["Europe/Paris"]}}
            ),
            output_schema=_object(
                {
                    "iso": {"type": "string"},
                    "timezone": {"type": "string"},
                    "unix": number,
                    "date": {"type": "string"},
                    "time": {"type": "string"},
                    "weekday": {"type": "string"},
                    "utc_offset": {"type": "string"},
                },
                ["iso", "timezone", "unix"],
            ),
            handler=_current_time,
        )
    )
    registry.register(
        Tool(
            name="http_request",
            description="Make an HTTP request. Private, loopback and link-local addresses are "
            "refused unless listed in HEDDLE_HTTP_ALLOW_HOSTS.",
            input_schema=_object(
                {
                    "method": {
                        "type": "string",
                        "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
                        "default": "GET",
                    },
                    "url": {"type": "string", "pattern": "^https?://"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "params": {
                        "type": "object",
                        "additionalProperties": {"type": ["string", "number", "boolean"]},
                    },
                    "body": {"type": "string"},
                    "json": {"description": "A JSON body (sets content-type)."},
                    "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
                },
                ["url"],
            ),
            output_schema=_object(
                {
                    "status": {"type": "integer"},
                    "headers": {"type": "object"},
                    "body": {"type": "string"},
                    "json": {},
                },
                ["status", "headers", "body"],
            ),
            handler=HttpTool(settings, http),
        )
    )
