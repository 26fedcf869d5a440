"""The gateway's FastAPI application: routes, the error layer and the middlewares."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from libs.common.kv import create_kv
from services.gateway.audit import AuditMiddleware
from services.gateway.auth import GatewayDatabase, Security, authenticate_connection
from services.gateway.clients import ServiceClients
from services.gateway.cors import add_cors
from services.gateway.errors import CatchAllMiddleware, install_error_handlers
from services.gateway.middleware import BodyLimitMiddleware, MetricsMiddleware, RequestIdMiddleware
from services.gateway.routes import catalog, executions, health, schedules, security, workflows
from services.gateway.routes.common import refuse_nul_characters
from services.gateway.routes.console import install_console
from services.gateway.schemas import WorkflowDefinition
from services.gateway.settings import GatewaySettings


def create_app(
    settings: GatewaySettings, clients: ServiceClients, guard: Security | None = None
) -> FastAPI:
    """The HTTP API over the given gRPC clients (the caller owns and closes them, and
    `app.state.security`: `await app.state.security.close()`)."""
    app = FastAPI(
        title="Heddle",
        version="1",
        summary="Distributed engine for AI and data workflows: the HTTP API.",
    )
    app.state.settings = settings
    app.state.clients = clients
    guard = guard or Security(
        settings, GatewayDatabase(settings.database_url), create_kv(settings.redis_url)
    )
    app.state.security = guard
    app.include_router(health.router)
    # Every /api/v1 route authenticates (and rate-limits) first; the WebSocket does it itself.
    # Then U+0000 anywhere in the request is a located 422 (PostgreSQL cannot store it).
    authenticated = [Depends(authenticate_connection), Depends(refuse_nul_characters)]
    for router in (
        workflows.router,
        executions.router,
        schedules.router,
        catalog.router,
        security.router,
    ):
        app.include_router(router, dependencies=authenticated)
    app.include_router(executions.ws_router)
    install_console(app)
    install_error_handlers(app)
    # Added innermost first: request ids wrap everything, so even a 413 carries one.
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(AuditMiddleware, security=guard)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    # Outermost: a preflight is answered before authentication, which it never carries.
    add_cors(app, settings)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    # Definition bodies are read by hand (JSON or YAML), so FastAPI does not see their model:
    # register it for the `$ref`s of those request bodies and of WorkflowOut.definition.
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
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
            if path.startswith("/api/v1/"):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema
