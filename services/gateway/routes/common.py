"""What every route shares: dependencies (clients, tenant, pagination) and body parsing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
import yaml
from fastapi import Depends, Query, Request
from heddle.v1 import common_pb2
from sqlalchemy.exc import IntegrityError
from starlette.requests import HTTPConnection

from libs.common import jsonutil
from libs.common.errors import Conflict, NotFound, PermissionDenied
from services.gateway.auth import Principal, Security, authenticate_connection, get_security
from services.gateway.clients import ServiceClients
from services.gateway.errors import InvalidYaml, invalid_request, malformed_json
from services.gateway.schemas import ErrorResponse
from services.gateway.settings import GatewaySettings

#: PostgreSQL stores no U+0000 in text or jsonb: a request that carries one anywhere is a 422
#: naming where (one rule for every route, rather than a 500 from whichever column it hits).
NUL = "\x00"
NUL_MESSAGE = "String should not contain the NUL character (U+0000)"
_NUL_SPELLINGS = (b"\\u0000", b"\\0", b"\\x00", b"\\U00000000", b"\x00")

YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
# A YAML body of a few KB can alias its way to billions of values; cap the expansion.
MAX_DOCUMENT_VALUES = 1_000_000

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Malformed JSON or YAML body (details: line, column)",
        401: "No credential, or an invalid, expired or revoked one",
        403: "The credential's role or scopes do not allow this",
        404: "Unknown id or route (or an object the caller may not see)",
        409: "Conflict with the current state",
        413: "Body larger than the limit",
        422: "The request fails validation (details: every located field error)",
        429: "Rate limit or tenant quota exceeded (Retry-After says when to try again)",
        503: "A service behind the gateway is unavailable",
        504: "A service behind the gateway did not answer in time",
    }.items()
}


def get_clients(connection: HTTPConnection) -> ServiceClients:
    clients: ServiceClients = connection.app.state.clients
    return clients


def get_settings(connection: HTTPConnection) -> GatewaySettings:
    settings: GatewaySettings = connection.app.state.settings
    return settings


def get_tenant(connection: HTTPConnection) -> str:
    """The caller's tenant, set by authentication; empty (the default tenant) until then."""
    return str(getattr(connection.state, "tenant_id", ""))


# Dependencies are coroutines even when they only read app.state: FastAPI runs a plain
# `def` dependency in the thread pool, a thread hand-off each way on every request.


async def _security_dependency(connection: HTTPConnection) -> Security:
    return get_security(connection)


async def _clients_dependency(connection: HTTPConnection) -> ServiceClients:
    return get_clients(connection)


#: The authenticated caller (the routers depend on it too, so it runs first and once).
Caller = Annotated[Principal, Depends(authenticate_connection)]
Guard = Annotated[Security, Depends(_security_dependency)]


async def caller_tenant(principal: Caller) -> str:
    return principal.tenant_id


Clients = Annotated[ServiceClients, Depends(_clients_dependency)]
Tenant = Annotated[str, Depends(caller_tenant)]


def authenticated_context(request: Request) -> tuple[ServiceClients, Security, Principal]:
    """What Clients, Guard and Caller give, read from the request by a route of an
    authenticated router (authenticate_connection, its dependency, ran first and remembered
    the caller). For the hottest routes (POST /execute, /run): FastAPI resolves every
    dependency anew per request, ~25 us each, 4 of them (~0.1 ms) on those routes."""
    principal = request.state.principal
    assert isinstance(principal, Principal), "the router authenticates first"
    return get_clients(request), get_security(request), principal


def require_creator_or_admin(caller: Principal, created_by: str | None, what: str) -> None:
    """A change to a tenant's shared object (an agent, a node preset): the 'write' scope, and
    its creator or a tenant admin."""
    if not caller.has_scope("write"):
        raise PermissionDenied("this credential lacks the 'write' scope")
    if not caller.admin and created_by != caller.id:
        raise PermissionDenied(f"only the {what}'s creator or a tenant admin may change it")


async def insert_version(guard: Security, row: object, what: str) -> None:
    """Insert a new version row; two saves of one version meet the primary key, and the one
    refused is told to read the object again (409)."""
    try:
        async with guard.db.transaction() as session:
            session.add(row)
    except IntegrityError as error:
        raise Conflict(f"the {what} changed meanwhile; read it again") from error


def checked_id(value: str, kind: str) -> str:
    """A path id, or NotFound when it is not even a UUID (the services would not know it)."""
    try:
        uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{kind} {value!r} not found") from None
    return value


def bounded_page_size(connection: HTTPConnection, page_size: int | None) -> int:
    """page_size or the default, refused (422) above max_page_size."""
    settings = get_settings(connection)
    if page_size is None:
        return settings.default_page_size
    if page_size > settings.max_page_size:
        raise invalid_request(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("query", "page_size"),
                    "msg": f"Input should be less than or equal to {settings.max_page_size}",
                    "input": page_size,
                }
            ]
        )
    return page_size


@dataclass(frozen=True)
class Pagination:
    page: int
    page_size: int

    def proto(self) -> common_pb2.PageRequest:
        return common_pb2.PageRequest(page=self.page, page_size=self.page_size)


async def get_pagination(
    connection: HTTPConnection,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="1-based page number.")] = 1,
    page_size: Annotated[
        int | None, Query(ge=1, description="Items per page (default 50, at most max_page_size).")
    ] = None,
) -> Pagination:
    return Pagination(page=page, page_size=bounded_page_size(connection, page_size))


Paging = Annotated[Pagination, Depends(get_pagination)]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def parse_document(body: bytes, media_type: str) -> Any:
    """Parse a JSON (or, for a YAML media type, YAML) body; syntax errors are 400s."""
    if media_type in YAML_MEDIA_TYPES:
        try:
            value = yaml.safe_load(body)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            raise InvalidYaml(
                f"malformed YAML at line {line} column {column}: {error.problem or error}",
                {"line": line, "column": column},
            ) from None
        except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as error:
            raise InvalidYaml(f"malformed YAML: {error}", None) from None
        _check_expansion(value)
        return value
    try:
        return jsonutil.loads(body)
    except orjson.JSONDecodeError as error:
        raise malformed_json(body.decode("utf-8", "replace"), error.pos, error.msg) from None


def _body_error(error_type: str, message: str) -> Exception:
    return invalid_request([{"type": error_type, "loc": ("body",), "msg": message, "input": None}])


def _check_expansion(value: Any) -> None:
    seen = 0
    stack = [value]
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_DOCUMENT_VALUES:
            raise _body_error("too_large", f"expands to more than {MAX_DOCUMENT_VALUES} values")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def nul_errors(value: Any, loc: tuple[str | int, ...]) -> list[dict[str, Any]]:
    """Pydantic-style errors locating every string (or object key) of a parsed JSON/YAML
    value that holds U+0000."""
    errors: list[dict[str, Any]] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [(loc, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                errors.append(_nul_error(where, item))
        elif isinstance(item, dict):
            for key, child in item.items():
                key_text = str(key)
                if NUL in key_text:
                    shown = key_text.replace(NUL, "\\u0000")
                    errors.append(_nul_error((*where, shown), key_text, "Object key"))
                stack.append(((*where, key_text), child))
        elif isinstance(item, list):
            stack.extend(((*where, index), child) for index, child in enumerate(item))
    errors.reverse()  # document order
    return errors


def _nul_error(loc: tuple[str | int, ...], value: str, what: str = "String") -> dict[str, Any]:
    return {
        "type": "string_nul_character",
        "loc": loc,
        "msg": NUL_MESSAGE.replace("String", what, 1),
        "input": value,
    }


async def refuse_nul_characters(request: Request) -> None:
    """Dependency of every /api/v1 route: 422 when a path or query parameter or the body
    (JSON, or YAML with a YAML media type) holds U+0000 (headers cannot: HTTP forbids it)."""
    errors: list[dict[str, Any]] = []
    for name, value in request.path_params.items():
        if NUL in str(value):
            errors.append(_nul_error(("path", name), str(value)))
    for name, value in request.query_params.multi_items():
        if NUL in name or NUL in value:
            errors.append(_nul_error(("query", name.replace(NUL, "\\u0000")), value))
    body = await request.body()
    # A body that spells no NUL is not parsed twice: in JSON only \u0000 makes one (a raw
    # one is a syntax error); YAML also has \0, \x00, \U00000000 and the raw byte.
    if any(spelling in body for spelling in _NUL_SPELLINGS):
        try:
            document = parse_document(body, _media_type(request))
        except Exception:  # the route reports a malformed body itself
            document = None
        errors.extend(nul_errors(document, ("body",)))
    if errors:
        raise invalid_request(errors)


async def authenticated_request(request: Request) -> None:
    """The dependency of the /api/v1 routers (uploads but: authenticate_connection alone):
    authenticate and rate-limit, then refuse a U+0000 (refuse_nul_characters). One
    dependency for both: FastAPI resolves each dependency anew on every request."""
    await authenticate_connection(request)
    await refuse_nul_characters(request)


async def read_object(request: Request, what: str, *, required: bool) -> dict[str, Any]:
    """The body as a JSON object (YAML too, with a YAML media type); an empty body is {}
    unless required."""
    body = await request.body()
    if not body.strip():
        if required:
            raise _body_error("missing", "Field required")
        return {}
    value = parse_document(body, _media_type(request))
    if not isinstance(value, dict):
        raise _body_error("dict_type", f"{what} must be an object")
    return value


async def read_definition(request: Request) -> bytes:
    """The workflow definition in the body (JSON or YAML) as JSON bytes for the services."""
    definition = await read_object(request, "A workflow definition", required=True)
    try:
        return jsonutil.dumps(definition)
    except orjson.JSONEncodeError as error:
        raise _body_error("value_error", str(error)) from None


_DEFINITION_EXAMPLE: dict[str, Any] = {
    "name": "hello",
    "description": "Greets whoever is named in the inputs.",
    "inputs": {"name": {"type": "string", "default": "world"}},
    "nodes": [
        {"id": "start", "type": "input"},
        {"id": "greet", "type": "template", "params": {"template": "Hello {{ inputs.name }}!"}},
    ],
    "edges": [{"source": "start", "target": "greet"}],
}
_DEFINITION_YAML_EXAMPLE = """\
name: hello
inputs:
  name: {type: string, default: world}
nodes:
  - {id: start, type: input}
  - id: greet
    type: template
    params: {template: "Hello {{ inputs.name }}!"}
edges:
  - {source: start, target: greet}
"""
_DEFINITION = {"$ref": "#/components/schemas/WorkflowDefinition"}

DEFINITION_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _DEFINITION,
                "examples": {"hello": {"summary": "Two nodes", "value": _DEFINITION_EXAMPLE}},
            },
            "application/yaml": {
                "schema": _DEFINITION,
                "examples": {"hello": {"summary": "Two nodes", "value": _DEFINITION_YAML_EXAMPLE}},
            },
        },
    }
}

# /validate reports on any object (a missing name is an issue in its 200 report, not a 422):
# its body is documented as such, with the definition's schema as the description's pointer.
_ANY_OBJECT = {
    "type": "object",
    "description": "A candidate WorkflowDefinition; the report lists what makes it invalid.",
}
VALIDATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _ANY_OBJECT,
                "examples": {"hello": {"summary": "Two nodes", "value": _DEFINITION_EXAMPLE}},
            },
            "application/yaml": {
                "schema": _ANY_OBJECT,
                "examples": {"hello": {"summary": "Two nodes", "value": _DEFINITION_YAML_EXAMPLE}},
            },
        },
    }
}
