"""The OpenAPI document (what clients and schemathesis hold the API to) and the /docs page.

The document is the contract, so what FastAPI cannot see is added here: the workflow
definition model (those bodies are read by hand, as JSON or YAML), the page-size bound of
this deployment's settings, the bearer scheme. /docs is Swagger UI served from the gateway
itself (the `swagger-ui-bundle-v2` package), so it works without internet access.
"""

from __future__ import annotations

import re
from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from services.gateway.errors import error_response
from services.gateway.schemas import WorkflowDefinition
from services.gateway.settings import GatewaySettings

DOCS_ASSETS = "/docs/assets"

DESCRIPTION = """\
The HTTP API of Heddle, a distributed engine for AI and data workflows.

**Authentication.** Every `/api/v1` operation takes an API key (`hk_<prefix>_<secret>`) or a
JWT as a bearer token: `Authorization: Bearer <credential>`.

**Errors** are JSON `{"error": {"code", "message", "details"}}`: 400 malformed JSON or YAML,
401/403 authentication and roles, 404, 409 conflict, 413 body too large, 422 invalid request
(`details` locate every field: `body.name`, `query.page_size`...), 429 rate limited (with
`Retry-After`), 503/504 a service behind the gateway is unavailable. No string may contain
the NUL character (U+0000): it is a 422 naming the field.

**Live events** of an execution come as Server-Sent Events from
`GET /api/v1/executions/{execution_id}/events` (see that operation), or over a WebSocket:

    GET /ws/v1/executions/{execution_id}?after=<seq>   (Upgrade: websocket)

Authenticated like the HTTP routes (`Authorization` header, or `?access_token=` for browsers).
Each event is one JSON text frame, the same object as an SSE frame's `data`:
`{"execution_id", "seq", "type", "node_id", "ts", "data", "trace_id"}`. `after` resumes after
that sequence number. An error (no credential, unknown id, service down) is sent as an
`{"error": {...}}` frame, then the socket closes with 4000 + the HTTP status (4401, 4404,
4503...); a normal end of the stream closes it with 1000.
"""

SSE_DESCRIPTION = """\
The execution's events, from the first (or after `?after=<seq>` / `Last-Event-ID`), then live
until the execution ends; the response ends after its final event.

The body is `text/event-stream`. It opens with `retry: 2000`; then one frame per event:

    id: 7
    event: node_succeeded
    data: {"execution_id": "...", "seq": 7, "type": "node_succeeded", "node_id": "greet",
           "ts": "2025-01-02T03:04:05Z", "data": {...}, "trace_id": "..."}

(`data` is one line.) `id` is the event's sequence number, so a browser's `EventSource`
reconnects with `Last-Event-ID` and misses nothing. An idle stream carries a `: ping` comment
every few seconds. An error after the stream began is an `event: error` frame whose data is
`{"error": {...}}`. 204 when nothing follows the resume point and the execution has ended
(EventSource then stops reconnecting). `EventSource` cannot send headers: pass the
credential as `?access_token=`.
"""

_WORD = re.compile(r"_+([a-z0-9])")


def operation_id(route: APIRoute) -> str:
    """Readable, stable operation ids: the route function's name in camelCase
    (`execute_workflow` -> `executeWorkflow`)."""
    return _WORD.sub(lambda match: match.group(1).upper(), route.name.strip("_"))


def build_openapi(app: FastAPI, settings: GatewaySettings) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        definition = WorkflowDefinition.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components.update(definition.pop("$defs", {}))
        components["WorkflowDefinition"] = definition
        # Documented for clients (and /docs' Authorize button): every /api/v1 operation takes
        # an API key or a JWT as a bearer token.
        schema["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (hk_<prefix>_<secret>) or a JWT.",
            }
        }
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if path.startswith("/api/v1/"):
                    # An operation that says `security: []` takes no credential (signed URLs).
                    operation.setdefault("security", [{"bearer": []}])
                for parameter in operation.get("parameters", []):
                    _tighten_parameter(parameter, settings)
                _add_links(operation)
        app.openapi_schema = schema
    return app.openapi_schema


#: OpenAPI links: what a created object's id leads to (clients and stateful testers follow
#: them). operation id -> (its status, the id's JSON pointer, parameter, target operations).
_LINKS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "createWorkflow": (
        "201",
        "/id",
        "workflow_id",
        ("getWorkflow", "updateWorkflow", "executeWorkflow", "listGrants", "deleteWorkflow"),
    ),
    "executeWorkflow": (
        "202",
        "/execution_id",
        "execution_id",
        ("getExecution", "streamEvents", "queryLogs", "cancelExecution", "retryExecution"),
    ),
    "createSchedule": (
        "201",
        "/id",
        "schedule_id",
        ("getSchedule", "updateSchedule", "triggerSchedule", "deleteSchedule"),
    ),
    "createApiKey": ("201", "/id", "key_id", ("revokeApiKey",)),
}


def _add_links(operation: dict[str, Any]) -> None:
    found = _LINKS.get(operation.get("operationId", ""))
    if found is None:
        return
    status, pointer, parameter, targets = found
    response = operation.get("responses", {}).get(status)
    if response is None:
        return
    response["links"] = {
        target[0].upper() + target[1:]: {
            "operationId": target,
            "parameters": {parameter: f"$response.body#{pointer}"},
        }
        for target in targets
    }


def _tighten_parameter(parameter: dict[str, Any], settings: GatewaySettings) -> None:
    """A query or header value is never JSON null, so `anyOf: [X, null]` (FastAPI's
    rendering of `X | None = None`) is just X, not required; page_size has this
    deployment's bound."""
    schema = parameter.get("schema", {})
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        kept = [branch for branch in branches if branch.get("type") != "null"]
        if len(kept) == 1:
            rest = {key: value for key, value in schema.items() if key != "anyOf"}
            schema = parameter["schema"] = {**kept[0], **rest}
    if parameter.get("in") == "query" and parameter.get("name") == "page_size":
        schema["maximum"] = settings.max_page_size


def install_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from this origin only (its assets, its initializer script)."""
    app.mount(
        DOCS_ASSETS,
        StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
        name="swagger-ui-assets",
    )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(_DOCS_HTML, headers={"Content-Security-Policy": _DOCS_CSP})

    @app.get("/docs/init.js", include_in_schema=False)
    async def swagger_ui_init() -> Response:
        return Response(
            _DOCS_INIT,
            media_type="text/javascript",
            headers={"Content-Security-Policy": _DOCS_CSP},
        )


_DOCS_HTML = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Heddle API</title>
<link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS_ASSETS}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

_DOCS_INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  displayOperationId: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""

# Swagger UI styles some elements inline and shows data: images; nothing leaves the origin.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 whose `Allow` lists every method the document declares for the path's resource:
    Starlette names only those of the first route that matched it (GET, where GET and POST
    are two routes). Paths outside the document keep Starlette's list."""
    allowed = _documented_methods(request.app, request.url.path)
    headers = getattr(exc, "headers", None) or {}
    return error_response(
        405,
        "method_not_allowed",
        f"method {request.method} not allowed on {request.url.path}",
        None,
        headers={"Allow": ", ".join(allowed)} if allowed else headers,
    )


def _documented_methods(app: FastAPI, path: str) -> list[str]:
    # The first template that matches, in declaration order, as the router would pick it
    # (/workflows/validate before /workflows/{workflow_id}).
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return [method.upper() for method in operations if method.upper() in _METHODS]
    return []
