"""Files: upload (multipart or a raw body, streamed to the artifact store), metadata, content
(streamed, with Range), list and delete; per tenant (another tenant's id is a 404).

The body of POST /api/v1/files is never held whole: the gateway's body-size limit does not
apply to this route (see app.py), which enforces the tenant's file limit while streaming,
and a partial upload is deleted.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from python_multipart.multipart import MultipartParser, parse_options_header

from libs.common.artifacts import (
    DEFAULT_CONTENT_TYPE,
    ArtifactMissing,
    ArtifactRef,
    ArtifactStore,
)
from libs.common.errors import HeddleError, InvalidArgument, Unavailable
from services.gateway.files import FileTooLarge, StoredFile, files_of
from services.gateway.routes.common import (
    ERROR_RESPONSES,
    Caller,
    Guard,
    Paging,
    checked_id,
    get_settings,
)
from services.gateway.schemas import Page

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["files"])

_CONTENT_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
#: What a multipart envelope may add around the file (boundaries, part headers).
_MULTIPART_SLACK = 64 * 1024
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class FileOut(BaseModel):
    id: str
    name: str
    content_type: str
    size: int
    sha256: str = Field(description="SHA-256 of the content, hex.")
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None = Field(description="When retention removes it; null: kept.")
    content_url: str = Field(description="Where the bytes are (GET, Range supported).")


class RangeNotSatisfiable(HeddleError):
    code = "range_not_satisfiable"
    http_status = 416


def file_out(stored: StoredFile) -> FileOut:
    return FileOut(
        id=stored.id,
        name=stored.name,
        content_type=stored.content_type,
        size=stored.size,
        sha256=stored.sha256,
        created_by=stored.created_by,
        created_at=stored.created_at,
        expires_at=stored.expires_at,
        content_url=f"/api/v1/files/{stored.id}/content",
    )


def content_type_of(value: str | None) -> str:
    media = (value or "").split(";", 1)[0].strip().lower()
    return media if _CONTENT_TYPE.match(media) else DEFAULT_CONTENT_TYPE


def _check_text(value: str, where: tuple[str, ...]) -> str:
    if "\x00" in value:
        raise InvalidArgument(
            "the value holds U+0000", [{"loc": list(where), "msg": "NUL character"}]
        )
    return value


class _MultipartFile:
    """The first file part of a multipart/form-data body, as a stream of its bytes."""

    def __init__(self, request: Request, boundary: bytes) -> None:
        self._stream = request.stream().__aiter__()
        self._pending: list[bytes] = []
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self.found = False
        self.finished = False
        self.name = ""
        self.content_type = DEFAULT_CONTENT_TYPE
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field_data,
                "on_header_value": self._header_value_data,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        if self.found:
            return
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        filename = options.get(b"filename")
        if filename is None and options.get(b"name") != b"file":
            return
        self.found = self._in_file = True
        self.name = (filename or b"").decode("utf-8", "replace")[:255]
        self.content_type = content_type_of(
            self._headers.get(b"content-type", b"").decode("latin-1")
        )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self.finished = True

    async def _feed(self) -> bool:
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            return False
        try:
            self._parser.write(chunk)
        except Exception as exc:
            raise InvalidArgument(
                f"malformed multipart body: {exc}", [{"loc": ["body"], "msg": str(exc)}]
            ) from None
        return True

    async def start(self) -> None:
        while not self.found:
            if not await self._feed():
                raise InvalidArgument(
                    "the multipart body has no file part (a part named 'file' or with a filename)",
                    [{"loc": ["body", "file"], "msg": "Field required"}],
                )

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            while self._pending:
                yield self._pending.pop(0)
            if self.finished:
                return
            if not await self._feed():
                raise InvalidArgument(
                    "the multipart body ends inside the file part",
                    [{"loc": ["body", "file"], "msg": "truncated"}],
                )


@router.post(
    "/files",
    status_code=status.HTTP_201_CREATED,
    summary="Upload a file (multipart/form-data part `file`, or the raw body), streamed",
    openapi_extra=_UPLOAD_BODY,
)
async def upload_file(
    request: Request,
    response: Response,
    caller: Caller,
    guard: Guard,
    name: Annotated[
        str | None, Query(max_length=255, description="File name of a raw-body upload.")
    ] = None,
) -> FileOut:
    guard.require(caller, "upload_file")
    settings = get_settings(request)
    limit = settings.file_limit(caller.tenant_id)
    media, options = parse_options_header(request.headers.get("content-type", ""))
    multipart = media == b"multipart/form-data"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + (_MULTIPART_SLACK if multipart else 0):
        raise FileTooLarge(limit)
    if multipart:
        boundary = options.get(b"boundary")
        if not boundary:
            raise InvalidArgument(
                "multipart/form-data without a boundary",
                [{"loc": ["header", "content-type"], "msg": "boundary missing"}],
            )
        part = _MultipartFile(request, boundary)
        await part.start()
        file_name, content_type, chunks = (
            part.name or (name or ""),
            part.content_type,
            part.chunks(),
        )
    else:
        if declared == "0" or not (declared or request.headers.get("transfer-encoding")):
            raise InvalidArgument(
                "the request has no body: send the file's bytes (or a multipart part 'file')",
                [{"loc": ["body"], "msg": "Field required", "type": "missing"}],
            )
        file_name = name or ""
        content_type = content_type_of(request.headers.get("content-type"))
        chunks = request.stream()
    stored = await files_of(request.app).upload(
        tenant_id=caller.tenant_id,
        name=_check_text(file_name, ("query", "name")),
        content_type=content_type,
        chunks=chunks,
        max_bytes=limit,
        quota_bytes=settings.files_quota_bytes,
        created_by=caller.id,
        retention_s=settings.files_retention_s,
    )
    request.state.audit_object_id = stored.id
    response.headers["Location"] = f"/api/v1/files/{stored.id}"
    return file_out(stored)


@router.get("/files", summary="The tenant's files, newest first")
async def list_files(
    request: Request, caller: Caller, guard: Guard, paging: Paging
) -> Page[FileOut]:
    guard.require(caller, "read_file")
    offset = (paging.page - 1) * paging.page_size
    items, total = await files_of(request.app).list(caller.tenant_id, offset, paging.page_size)
    return Page[FileOut](
        items=[file_out(stored) for stored in items],
        page=paging.page,
        page_size=paging.page_size,
        total=total,
    )


@router.get("/files/{file_id}", summary="A file's metadata (size, content type, SHA-256)")
async def get_file(file_id: str, request: Request, caller: Caller, guard: Guard) -> FileOut:
    guard.require(caller, "read_file")
    return file_out(
        await files_of(request.app).require(caller.tenant_id, checked_id(file_id, "file"))
    )


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `Range: bytes=a-b`; None without one; 416 when unsatisfiable."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(
            f"Range {header!r} is not a single byte range (bytes=a-b)", {"size": size}
        )
    first, last = match.groups()
    if first == "":  # the last n bytes
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = size if last == "" else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise RangeNotSatisfiable(
            f"Range {header!r} is outside the file's {size} bytes", {"size": size}
        )
    return start, end


@router.get(
    "/files/{file_id}/content",
    summary="A file's bytes, streamed; a Range header gives 206 Partial Content",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "Partial Content (a Range)"},
        416: {"description": "Range not satisfiable"},
    },
)
async def file_content(file_id: str, request: Request, caller: Caller, guard: Guard) -> Response:
    guard.require(caller, "read_file")
    repository = files_of(request.app)
    stored = await repository.require(caller.tenant_id, checked_id(file_id, "file"))
    return await artifact_response(
        repository.store,
        stored.ref,
        request.headers.get("range"),
        name=stored.name or stored.id,
        what=f"the content of file {file_id!r}",
    )


async def artifact_response(
    store: ArtifactStore, ref: ArtifactRef, range_header: str | None, *, name: str, what: str
) -> Response:
    """The bytes of ref, streamed as a download (206 for a Range); a 503 naming `what` when
    they are missing from the store."""
    wanted = _byte_range(range_header, ref.size)
    start, end = wanted or (0, ref.size)
    stream = store.open_stream(ref, start, end)
    try:  # the first chunk now, so that a missing artifact is an error, not a cut stream
        first = await anext(stream, b"")
    except ArtifactMissing:
        raise Unavailable(f"{what} is missing from the artifact store") from None

    async def body() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in stream:
            yield chunk

    quoted = urllib.parse.quote(name)
    headers = {
        "content-length": str(end - start),
        "accept-ranges": "bytes",
        # Always a download, never rendered on the gateway's origin (whatever the type says).
        "content-disposition": f"attachment; filename*=UTF-8''{quoted}",
        "x-content-type-options": "nosniff",
    }
    if ref.sha256:
        headers["etag"] = f'"{ref.sha256}"'
    if wanted is not None:
        headers["content-range"] = f"bytes {start}-{end - 1}/{ref.size}"
    return StreamingResponse(
        body(),
        status_code=206 if wanted is not None else 200,
        media_type=ref.content_type,
        headers=headers,
    )


@router.delete(
    "/files/{file_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a file (its row and its bytes)",
)
async def delete_file(file_id: str, request: Request, caller: Caller, guard: Guard) -> None:
    guard.require(caller, "delete_file")
    request.state.audit_object_id = checked_id(file_id, "file")
    await files_of(request.app).delete(caller.tenant_id, file_id)
