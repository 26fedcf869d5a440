"""Artifacts by reference (the claim check's values, uploaded files, snapshots): their bytes
for the caller's tenant, and short-lived signed download URLs.

`GET /api/v1/artifacts/content?ref=artifact://...` streams the bytes (with Range) to a caller
that authenticates as every route does: with an `Authorization` header, which a browser's
plain link cannot send. So `POST /api/v1/artifacts/download-url` hands the caller a URL,
`/api/v1/artifacts/download/<token>`, that carries its own proof: the token names the key,
the tenant, the content type, the file name and an expiry, and is signed with HMAC-SHA-256
under a key derived from the gateway's API-key pepper (so every gateway replica checks what
any replica signed). It is checked without a credential; a token past its expiry, altered,
or signed by another key is a 403, and it only ever reaches the tenant's own keys.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from libs.common.artifacts import REF_SCHEME, ArtifactMissing, ArtifactRef, check_key
from libs.common.claimcheck import allowed_key
from libs.common.errors import NotFound, PermissionDenied
from services.gateway.routes.common import ERROR_RESPONSES, Caller, Guard, get_settings
from services.gateway.routes.files import artifact_response, content_type_of

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["files"])
#: The signed download: no credential (the token is one); mounted without authentication.
public_router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["files"])

_REF = r"^artifact://[A-Za-z0-9][A-Za-z0-9._\-/=]{0,511}$"
_DOWNLOAD: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}},
    206: {"description": "Partial Content (a Range)"},
    416: {"description": "Range not satisfiable"},
}


class DownloadUrlIn(BaseModel):
    ref: str = Field(
        pattern=_REF, max_length=600, description="The reference's `$ref` (artifact://...)."
    )
    content_type: str | None = Field(
        default=None, max_length=255, description="Served as; the reference's content_type."
    )
    name: str | None = Field(
        default=None, max_length=255, description="The file name the browser saves it as."
    )


class DownloadUrlOut(BaseModel):
    url: str = Field(description="GET it without a credential until expires_at.")
    expires_at: dt.datetime


def _signing_key(request: Request) -> bytes:
    pepper = get_settings(request).api_key_pepper.encode()
    return hmac.new(pepper, b"heddle artifact download url v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_download(request: Request, claims: dict[str, Any]) -> str:
    payload = _b64(orjson.dumps(claims))
    signature = hmac.new(_signing_key(request), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(signature)}"


def verify_download(request: Request, token: str) -> dict[str, Any]:
    """The claims of a token this gateway signed and that has not expired; 403 otherwise."""
    payload, _, signature = token.partition(".")
    expected = hmac.new(_signing_key(request), payload.encode(), hashlib.sha256).digest()
    try:
        valid = hmac.compare_digest(_unb64(signature), expected)
        claims = orjson.loads(_unb64(payload)) if valid else None
    except (ValueError, orjson.JSONDecodeError):
        valid, claims = False, None
    if not valid or not isinstance(claims, dict):
        raise PermissionDenied("the download link is not valid (altered or not signed here)")
    if float(claims.get("exp", 0)) < time.time():
        raise PermissionDenied("the download link has expired: ask for a new one")
    return claims


async def _tenant_ref(
    request: Request, ref: str, tenant_id: str, content_type: str | None
) -> ArtifactRef:
    """The tenant's artifact at ref with its size; 404 for another tenant's or a gone one."""
    key = ref[len(REF_SCHEME) :] if ref.startswith(REF_SCHEME) else ref
    try:
        check_key(key)
    except ValueError:
        raise NotFound(f"artifact {ref!r} not found") from None
    if not allowed_key(key, tenant_id):
        raise NotFound(f"artifact {ref!r} not found")
    try:
        size = await request.app.state.artifacts.size(key)
    except ArtifactMissing:
        raise NotFound(f"artifact {ref!r} not found (missing from the artifact store)") from None
    # Content-addressed values are named by their SHA-256 (the ETag); others have none here.
    digest = key.rsplit("/", 1)[-1] if key.startswith("values/") else ""
    return ArtifactRef(key, size, digest, content_type_of(content_type))


@router.get(
    "/artifacts/content",
    summary="An artifact's bytes (a reference's $ref), streamed; Range gives 206",
    responses=_DOWNLOAD,
)
async def artifact_content(
    request: Request,
    caller: Caller,
    guard: Guard,
    ref: Annotated[str, Query(pattern=_REF, max_length=600, description="artifact://...")],
    content_type: Annotated[
        str | None, Query(max_length=255, description="Served as (the reference's).")
    ] = None,
) -> Response:
    guard.require(caller, "read_file")
    artifact = await _tenant_ref(request, ref, caller.tenant_id, content_type)
    return await artifact_response(
        request.app.state.artifacts,
        artifact,
        request.headers.get("range"),
        name=artifact.key.rsplit("/", 1)[-1],
        what=f"artifact {ref!r}",
    )


@router.post(
    "/artifacts/download-url",
    summary="A short-lived signed URL that downloads an artifact without a credential",
)
async def create_download_url(
    body: DownloadUrlIn, request: Request, caller: Caller, guard: Guard
) -> DownloadUrlOut:
    guard.require(caller, "read_file")
    artifact = await _tenant_ref(request, body.ref, caller.tenant_id, body.content_type)
    expires = time.time() + get_settings(request).download_url_ttl_s
    claims = {
        "k": artifact.key,
        "t": caller.tenant_id,
        "c": artifact.content_type,
        "n": (body.name or artifact.key.rsplit("/", 1)[-1]).replace("\x00", ""),
        "exp": round(expires, 3),
    }
    return DownloadUrlOut(
        url=f"/api/v1/artifacts/download/{sign_download(request, claims)}",
        expires_at=dt.datetime.fromtimestamp(expires, dt.UTC),
    )


@public_router.get(
    "/artifacts/download/{token}",
    summary="Download an artifact through a signed URL (no credential: the token is one)",
    responses=_DOWNLOAD,
    openapi_extra={"security": []},
)
async def download_artifact(token: str, request: Request) -> Response:
    claims = verify_download(request, token)
    artifact = await _tenant_ref(
        request, str(claims.get("k", "")), str(claims.get("t", "")), str(claims.get("c", ""))
    )
    return await artifact_response(
        request.app.state.artifacts,
        artifact,
        request.headers.get("range"),
        name=str(claims.get("n") or artifact.key.rsplit("/", 1)[-1]),
        what=f"artifact {REF_SCHEME}{artifact.key}",
    )
