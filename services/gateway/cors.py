"""CORS for browser apps served from another origin (the console itself is same-origin).

Starlette's CORSMiddleware implements the Fetch standard's rules (an allowed origin is echoed,
never `*` when credentials are allowed; `Vary: Origin`; a preflight naming a method or header
that is not allowed is refused); only its preflight status differs from what clients of this
API expect: a preflight that succeeds is answered 204 No Content, as it has no body.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from services.gateway.settings import GatewaySettings

#: Response headers a cross-origin script may read besides the CORS-safelisted ones.
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After", "Location", "Last-Event-ID")


class PreflightNoContentCors(CORSMiddleware):
    """CORSMiddleware whose successful preflight is a bodiless 204 (refusals stay 400)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            headers = {
                name: value
                for name, value in response.headers.items()
                if name not in ("content-length", "content-type")
            }
            return Response(status_code=204, headers=headers)
        return response


def add_cors(app: FastAPI, settings: GatewaySettings) -> None:
    """Add the CORS middleware, outermost, when origins are allowed; without any the gateway
    adds none (no CORS header anywhere, a preflight is answered like any OPTIONS: 405)."""
    if not settings.cors_allow_origins:
        return
    app.add_middleware(
        PreflightNoContentCors,
        allow_origins=settings.cors_allow_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Idempotency-Key"],
        allow_credentials=settings.cors_allow_credentials,
        expose_headers=list(EXPOSED_HEADERS),
        max_age=settings.cors_max_age_s,
    )
