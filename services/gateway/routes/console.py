"""The web console: the built single-page app (`console/`, rebuilt by `make console`) and the
little it needs to know before sign-in."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from services.gateway.auth import ANONYMOUS, bearer_token, get_security
from services.gateway.routes.common import get_settings

#: Where `make console` (vite) writes the build; committed, so `make run` needs no Node.js.
CONSOLE_DIST = Path(__file__).resolve().parent.parent / "console_dist"

# React Flow positions nodes with inline styles; everything else comes from this origin.
# Images may be blob: URLs too: the console shows an image artifact from the bytes it fetched
# with its API key (a plain <img src> could not send the key).
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)

router = APIRouter(tags=["console"])


class ConsoleConfig(BaseModel):
    dev_api_key: str | None = Field(
        default=None,
        description="The embedded stack's development admin key, offered to loopback callers "
        "only, so that the console of `make run` signs itself in.",
    )
    jaeger_url: str | None = Field(
        default=None, description="Base URL of the Jaeger UI the trace links point at."
    )


@router.get("/console/config", summary="What the web console needs before sign-in")
async def console_config(request: Request) -> ConsoleConfig:
    dev_key = getattr(request.app.state, "console_dev_key", None)
    return ConsoleConfig(
        dev_api_key=dev_key if dev_key and _is_loopback(request) else None,
        jaeger_url=get_settings(request).jaeger_ui_url or None,
    )


class ConsoleSession(BaseModel):
    signed_in: bool = Field(description="Whether the request's credential is accepted.")
    tenant_id: str | None = None
    message: str | None = Field(default=None, description="Why not, when it is not.")


@router.get(
    "/console/session",
    summary="Whether the bearer credential signs the console in (200 either way)",
)
async def console_session(request: Request) -> ConsoleSession:
    """The console's sign-in check. A refused key answers 200 with `signed_in: false`
    rather than 401, which browsers log as an error on the page; nothing else is revealed
    than what any /api/v1 call's 401 already says."""
    security = get_security(request)
    if not security.enabled:
        return ConsoleSession(signed_in=True, tenant_id=ANONYMOUS.tenant_id)
    token = bearer_token(request, allow_query=False)
    if token is None:
        return ConsoleSession(signed_in=False, message="no credential given")
    try:
        principal = await security.authenticate(token)
    except HTTPException as refused:
        return ConsoleSession(signed_in=False, message=str(refused.detail))
    await security.check_rate(principal)
    return ConsoleSession(signed_in=True, tenant_id=principal.tenant_id)


@router.get("/", include_in_schema=False, response_model=None)
async def console_index() -> FileResponse | JSONResponse:
    index = CONSOLE_DIST / "index.html"
    if not index.exists():
        return JSONResponse(
            {
                "error": {
                    "code": "console_not_built",
                    "message": "The web console is not built: run `make console`.",
                    "details": None,
                }
            },
            status_code=404,
        )
    return FileResponse(
        index, headers={"Cache-Control": "no-cache", "Content-Security-Policy": _CSP}
    )


def install_console(app: FastAPI) -> None:
    """Serve the console at `/` and its content-hashed assets (cached for good)."""
    app.include_router(router)
    assets = CONSOLE_DIST / "assets"
    if assets.is_dir():
        app.mount("/assets", _ImmutableFiles(directory=assets), name="console-assets")


class _ImmutableFiles(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def _is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
