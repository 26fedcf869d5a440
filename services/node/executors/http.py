"""The http_request node: an outbound HTTP call under the shared address policy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from libs.common.artifacts import ArtifactMissing, ArtifactRef, ArtifactStore, is_ref
from libs.common.claimcheck import allowed_key
from libs.common.netguard import ForbiddenAddressError, check_url_allowed_async
from libs.common.node_types import NodeTypeSpec
from services.node.executors.base import (
    Executor,
    NodeError,
    NodeRequest,
    NodeResult,
    Services,
    as_text,
    object_schema,
)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_ERROR_BODY_CHARS = 2000

#: The header of the IETF draft (draft-ietf-httpapi-idempotency-key-header), as Stripe uses.
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Safe methods have no side effect to deduplicate.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_STRING_MAP = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class HttpRequestExecutor(Executor):
    spec = NodeTypeSpec(
        type="http_request",
        title="HTTP request",
        description="Calls an HTTP endpoint. Connection errors, timeouts, 429 and 5xx are "
        "retryable; other 4xx are not.",
        category="integration",
        params_schema=object_schema(
            {
                "method": {"type": "string", "enum": METHODS, "default": "GET"},
                "url": {
                    "type": "string",
                    "minLength": 1,
                    "description": "http(s) URL, e.g. https://api.example.com/{{ inputs.id }}",
                },
                "headers": {**_STRING_MAP, "description": "Request headers."},
                "query": {**_STRING_MAP, "description": "Query string parameters."},
                "body": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "object", "required": ["$ref", "sha256"]},
                    ],
                    "description": "Raw request body, or a file / referenced value "
                    "({{ inputs.doc }}): then streamed from the artifact store.",
                },
                "json": {"description": "A JSON request body (excludes 'body')."},
                "timeout_s": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "Timeout of the call (capped by the node's timeout).",
                },
                "follow_redirects": {"type": "boolean", "default": True},
                "idempotency_header": {
                    "type": "string",
                    "default": IDEMPOTENCY_HEADER,
                    "description": "Header that carries the attempt's idempotency key on "
                    "POST, PUT, PATCH and DELETE (one key per logical dispatch: a request "
                    "re-sent after a crash or a lost connection repeats it); empty: none.",
                },
            },
            required=["url"],
            # Both absent is fine; both present is ambiguous.
            **{"not": {"required": ["body", "json"]}},
        ),
        output_schema=object_schema(
            {
                "status": {"type": "integer"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "body": {"type": "string"},
                "json": {"description": "The parsed body when the response is JSON, else null."},
            },
            required=["status", "headers", "body", "json"],
        ),
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        settings = services.settings
        timeouts = [t for t in (params.get("timeout_s"), request.timeout_s) if t is not None]
        timeout = min(timeouts) if timeouts else settings.http_default_timeout_s
        target = f"{params['method']} {params['url']}"
        headers = {k: as_text(v) for k, v in (params.get("headers") or {}).items()}
        key_header = params.get("idempotency_header", IDEMPOTENCY_HEADER)
        keyed = bool(key_header) and params["method"] not in _SAFE_METHODS
        # A key the params set themselves wins.
        if (
            keyed
            and request.idempotency_key
            and key_header.lower() not in {name.lower() for name in headers}
        ):
            headers[key_header] = request.idempotency_key
        content = params.get("body")
        if isinstance(content, dict) and is_ref(content) and services.artifacts is not None:
            content = self._streamed_body(content, headers, request.tenant_id, services.artifacts)
        try:
            outgoing = services.http.build_request(
                params["method"],
                params["url"],
                headers=headers,
                # None, not {}: an empty mapping would drop the query string of the URL.
                params={k: as_text(v) for k, v in (params.get("query") or {}).items()} or None,
                content=content,
                json=params.get("json"),
                timeout=timeout,
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise NodeError("ValidationError", f"invalid URL: {exc}", retryable=False) from exc
        max_hops = settings.http_max_redirects if params["follow_redirects"] else 0
        try:
            for _ in range(max_hops + 1):
                await self._check_address(str(outgoing.url), settings.http_allow_hosts)
                # Redirects are followed here, not by the client, so each hop is checked.
                response = await services.http.send(outgoing, stream=True, follow_redirects=False)
                try:
                    location = response.headers.get("location")
                    if response.status_code not in _REDIRECT_STATUSES or not location:
                        body = await self._read_bounded(response, settings.http_max_response_bytes)
                        return NodeResult(output=self._output(response, body, keyed))
                    outgoing = self._redirected(outgoing, response, location)
                finally:
                    await response.aclose()
        except ArtifactMissing as missing:
            raise NodeError(
                "ArtifactMissing",
                f"the body artifact://{missing.key} is missing from the artifact store",
                retryable=True,
                details={"ref": f"artifact://{missing.key}"},
            ) from missing
        except httpx.TimeoutException as exc:
            raise NodeError(
                "Timeout", f"{target} timed out after {timeout}s", retryable=True
            ) from exc
        except (httpx.TransportError, OSError) as exc:
            # Refused connections, resets, DNS failures: the next attempt may well succeed.
            raise NodeError(
                "ConnectionError", f"{target} failed: {exc or type(exc).__name__}", retryable=True
            ) from exc
        except httpx.RequestError as exc:  # undecodable body and the like: retrying won't help
            raise NodeError("HttpError", f"{target} failed: {exc}", retryable=False) from exc
        raise NodeError(
            "HttpError", f"more than {max_hops} redirects from {params['url']}", retryable=False
        )

    @staticmethod
    def _streamed_body(
        value: dict[str, Any], headers: dict[str, str], tenant_id: str, store: ArtifactStore
    ) -> AsyncIterator[bytes]:
        """A body given as a file or referenced value: streamed from the artifact store (the
        replica holds one chunk at a time), with its length and content type."""
        ref = ArtifactRef.from_json(value)
        assert ref is not None
        if not allowed_key(ref.key, tenant_id):
            raise NodeError("InvalidReference", f"{ref.uri} is not this tenant's")
        names = {name.lower() for name in headers}
        if "content-type" not in names:
            headers["Content-Type"] = ref.content_type
        headers["Content-Length"] = str(ref.size)
        return store.open_stream(ref)

    @staticmethod
    async def _check_address(url: str, allow: list[str]) -> None:
        try:
            await check_url_allowed_async(url, allow)
        except ForbiddenAddressError as exc:
            raise NodeError("ForbiddenAddress", str(exc), retryable=False) from exc

    @staticmethod
    def _redirected(
        previous: httpx.Request, response: httpx.Response, location: str
    ) -> httpx.Request:
        url = previous.url.join(location)
        # Browsers' rule: 303 (and 301/302 after a POST) turn into a body-less GET.
        method = previous.method
        if (response.status_code == 303 and method != "HEAD") or (
            response.status_code in (301, 302) and method == "POST"
        ):
            method = "GET"
        headers = httpx.Headers(previous.headers)
        if method == "GET" and previous.method != "GET":
            for name in ("content-length", "content-type", "transfer-encoding"):
                headers.pop(name, None)
        if url.host != previous.url.host:
            headers.pop("authorization", None)  # never leak credentials to another host
        headers.pop("host", None)
        content = previous.content if method == previous.method else None
        return httpx.Request(
            method, url, headers=headers, content=content, extensions=previous.extensions
        )

    @staticmethod
    async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise NodeError(
                    "ResponseTooLarge",
                    f"response body exceeds {limit} bytes",
                    retryable=False,
                    details={"status": response.status_code, "limit": limit},
                )
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _output(response: httpx.Response, raw: bytes, keyed: bool = False) -> dict[str, Any]:
        text = raw.decode(response.encoding or "utf-8", errors="replace")
        status = response.status_code
        if status == 409 and keyed:
            # The draft's answer to a key whose first request is still being processed: a
            # retry (which keeps the key) will get that request's result.
            raise NodeError(
                "IdempotencyConflict",
                f"{response.request.method} {response.request.url} returned 409: the "
                "request first sent under this idempotency key is still being processed",
                retryable=True,
                details={"status": status, "body": text[:_ERROR_BODY_CHARS]},
            )
        if status >= 400:
            raise NodeError(
                "HttpError",
                f"{response.request.method} {response.request.url} returned {status} "
                f"{response.reason_phrase}",
                retryable=status == 429 or status >= 500,
                details={
                    "status": status,
                    "retry_after": parse_retry_after(response.headers.get("retry-after")),
                    "body": text[:_ERROR_BODY_CHARS],
                },
            )
        parsed = None
        if _is_json(response.headers.get("content-type", "")) and text.strip():
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None  # a server that mislabels its body should not fail the call
        return {
            "status": status,
            "headers": dict(response.headers.items()),
            "body": text,
            "json": parsed,
        }
