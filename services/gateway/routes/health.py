"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.gateway.auth import get_security
from services.gateway.routes.common import get_clients, get_settings
from services.gateway.schemas import DependencyStatus, Liveness, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Liveness:
    return Liveness()


@router.get(
    "/readyz",
    summary="Whether the services behind the gateway answer their gRPC health checks",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A required dependency is down"}},
)
async def readyz(request: Request) -> JSONResponse:
    required = set(get_settings(request).ready_required)
    services, stores = await asyncio.gather(
        get_clients(request).health(), get_security(request).health()
    )
    health = {**services, **stores}
    report = Readiness(
        status="ready"
        if all(up for name, up in health.items() if name in required)
        else "not_ready",
        dependencies={
            name: DependencyStatus(status="up" if up else "down", required=name in required)
            for name, up in health.items()
        },
    )
    return JSONResponse(report.model_dump(), status_code=200 if report.status == "ready" else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
