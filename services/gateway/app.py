"""The gateway's FastAPI application: routes, the error layer and the middlewares."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from libs.common.artifacts import artifact_settings_of, create_artifact_store
from libs.common.kv import create_kv
from services.gateway.audit import AuditMiddleware
from services.gateway.auth import GatewayDatabase, Security, authenticate_connection
from services.gateway.clients import ServiceClients
from services.gateway.cors import add_cors
from services.gateway.errors import CatchAllMiddleware, install_error_handlers
from services.gateway.middleware import BodyLimitMiddleware, MetricsMiddleware, RequestIdMiddleware
from services.gateway.openapi import (
    DESCRIPTION,
    build_openapi,
    install_docs,
    method_not_allowed,
    operation_id,
)
from services.gateway.routes import (
    agents,
    artifacts,
    batches,
    cache,
    catalog,
    events,
    executions,
    files,
    forks,
    health,
    knowledge,
    presets,
    schedules,
    security,
    snapshots,
    versions,
    webhooks,
    workflows,
)
from services.gateway.routes.common import authenticated_request
from services.gateway.routes.console import install_console
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
        description=DESCRIPTION,
        # /docs is served from this origin (install_docs); ReDoc would load from a CDN.
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
        # The request's SERVER span is MetricsMiddleware's. FastAPI's own telemetry (0.16x)
        # made it with three child spans per request (dependencies, endpoint, serialization)
        # and OTel metrics beside Prometheus': ~10 % of the gateway's CPU per POST /run.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.clients = clients
    guard = guard or Security(
        settings, GatewayDatabase(settings.database_url), create_kv(settings.redis_url)
    )
    app.state.security = guard
    app.state.artifacts = create_artifact_store(artifact_settings_of(settings))
    # Every /api/v1 route authenticates (and rate-limits) first; the WebSocket does it itself.
    # Then U+0000 anywhere in the request is a located 422 (PostgreSQL cannot store it).
    authenticated = [Depends(authenticated_request)]
    for router in (
        workflows.router,
        executions.router,
        schedules.router,
        catalog.router,
        security.router,
        cache.router,
        versions.router,
        presets.router,
        webhooks.router,
        batches.router,
        events.router,
        agents.router,
        knowledge.router,
        snapshots.router,
        forks.router,
        artifacts.router,
    ):
        app.include_router(router, dependencies=authenticated)
    # After the API's routers: a request is matched against the routes in the order they were
    # added, and a probe's or a scrape's is rarer than a POST /run (no path is in both).
    app.include_router(health.router)
    # A signed download URL carries its own proof (a browser's link sends no credential).
    app.include_router(artifacts.public_router)
    # Uploads stream their body: no NUL scan of it (which would read it whole).
    app.include_router(files.router, dependencies=[Depends(authenticate_connection)])
    app.include_router(executions.ws_router)
    install_console(app)
    install_docs(app)
    install_error_handlers(app)
    app.add_exception_handler(405, method_not_allowed)
    # Added innermost first: request ids wrap everything, so even a 413 carries one.
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(AuditMiddleware, security=guard)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        streamed=frozenset({("POST", "/api/v1/files")}),
    )
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    # Outermost: a preflight is answered before authentication, which it never carries.
    add_cors(app, settings)
    app.openapi = lambda: build_openapi(app, settings)  # type: ignore[method-assign]
    return app
