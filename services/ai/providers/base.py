"""The provider interface, the internal chat form, and the HTTP plumbing providers share.

Internal forms (what the AI service accepts and returns, whatever the provider):
- message: ``{"role": "system"|"user"|"assistant"|"tool", "content": str,
  "tool_calls"?: [tool call], "tool_call_id"?: str}``
- tool schema: ``{"name", "description", "input_schema"}``
- tool call: ``{"id", "name", "arguments": dict}``

A provider only translates between these and its wire format. Retries, the circuit breaker
and fallback chains live in ``router.py`` so every provider gets the same behaviour.
"""

from __future__ import annotations

import codecs
import email.utils
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from libs.common import jsonutil

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ChatRequest:
    """One call to one provider: the upstream model id plus the conversation."""

    model: str
    messages: list[dict[str, Any]]  # internal form; system prompts included as messages
    temperature: float | None = None
    max_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None


@dataclass
class ChatResult:
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"


@dataclass
class EmbedResult:
    vectors: list[list[float]]
    prompt_tokens: int = 0


class ProviderError(Exception):
    """A provider call failed.

    ``retryable`` marks failures that say nothing about the request (rate limits, 5xx,
    timeouts, refused connections): they are retried, count against the circuit breaker
    and move on to the next model of a fallback chain.

    ``message`` does not name the provider: the router, which knows the route, does (a
    provider that prefixed its own name gave ``echo: echo: ...`` once the router added the
    model's).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class Provider(ABC):
    """One configured LLM endpoint."""

    kind: str = ""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    async def complete(self, request: ChatRequest) -> ChatResult: ...

    @abstractmethod
    def stream(self, request: ChatRequest) -> AsyncGenerator[str | ChatResult, None]:
        """Yield text deltas as they come, then exactly one ChatResult (the whole answer)."""

    def describe(self) -> dict[str, Any]:
        """Public facts for ListModels; never credentials."""
        return {"type": self.kind}

    async def embed(
        self, model: str, texts: Sequence[str], dimensions: int | None = None
    ) -> EmbedResult:
        """Embedding vectors of texts, in order; a provider without embeddings refuses."""
        raise ProviderError(f"{self.kind} providers serve no embeddings", retryable=False)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        pass


# ---------------------------------------------------------------------------- helpers


def parse_arguments(raw: Any) -> dict[str, Any]:
    """Tool-call arguments as a dict, whether they came as a JSON string or an object."""
    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(raw: bytes) -> str:
    try:
        body = jsonutil.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return str(body)[:500]


def is_retryable_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


#: The body of every request.
_JSON_HEADERS = {"Content-Type": "application/json"}


class HttpProvider(Provider):
    """A provider over HTTP+JSON with SSE streaming; subclasses only map formats.

    Subclasses implement ``path``, ``auth_headers``, ``build_body``, ``parse_response`` and
    ``new_stream`` (a per-stream accumulator of SSE events).

    The client is aiohttp's: one session per provider (its connections kept alive), made on
    the first call (a session belongs to the running loop). httpx cost 0.96-1.06 ms of CPU
    per call against a local server, aiohttp 0.17 (most of httpx's went to two write calls
    per request, headers then body, and to httpcore looking for sniffio on every call:
    a failed import, a walk of sys.path). The proxy of ``HTTPS_PROXY``/``HTTP_PROXY``/
    ``NO_PROXY`` (httpx read it by default) is read once, not per call as aiohttp's
    ``trust_env`` would.
    """

    path: str = ""

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str | None,
        timeout_s: float,
        connect_timeout_s: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name)
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._headers = {**(headers or {}), **self.auth_headers(api_key)}
        # As httpx's Timeout(timeout_s, connect=...): each read may wait timeout_s (a
        # stream's whole length is not bounded), a connection connect_timeout_s.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=connect_timeout_s, sock_read=timeout_s
        )
        self._url = URL(self.base_url + self.path)
        self._proxy, self._proxy_auth = _env_proxy(self._url)
        self._client: aiohttp.ClientSession | None = None

    @abstractmethod
    def auth_headers(self, api_key: str | None) -> dict[str, str]: ...

    @abstractmethod
    def build_body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]: ...

    @abstractmethod
    def parse_response(self, body: dict[str, Any]) -> ChatResult: ...

    @abstractmethod
    def new_stream(self) -> StreamAccumulator: ...

    def describe(self) -> dict[str, Any]:
        return {"type": self.kind, "base_url": self.base_url}

    def _session(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def post_json(self, url: URL, body: dict[str, Any]) -> Any:
        """POST body as JSON, the answer's JSON; transport errors and 4xx/5xx as
        ProviderError."""
        try:
            async with self._session().post(
                url, data=jsonutil.dumps(body), headers=_JSON_HEADERS
            ) as response:
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise self._transport_error(error) from error
        if response.status >= 400:
            raise self._status_error(response.status, raw, response.headers)
        try:
            return jsonutil.loads(raw)
        except ValueError as error:
            raise ProviderError(
                "response is not JSON", retryable=True, status=response.status
            ) from error

    async def complete(self, request: ChatRequest) -> ChatResult:
        data = await self.post_json(self._url, self.build_body(request, stream=False))
        if not isinstance(data, dict):
            raise ProviderError("response is not a JSON object", retryable=True)
        return self.parse_response(data)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[str | ChatResult, None]:
        body = self.build_body(request, stream=True)
        accumulator = self.new_stream()
        try:
            async with self._session().post(
                self._url, data=jsonutil.dumps(body), headers=_JSON_HEADERS
            ) as response:
                if response.status >= 400:
                    raw = await response.read()
                    raise self._status_error(response.status, raw, response.headers)
                async for event, data in iter_sse(iter_lines(response.content.iter_any())):
                    delta = accumulator.feed(event, data)
                    if delta:
                        yield delta
                    if accumulator.done:
                        break
        except (aiohttp.ClientError, TimeoutError) as error:
            raise self._transport_error(error) from error
        yield accumulator.result()

    def _transport_error(self, error: Exception) -> ProviderError:
        if isinstance(error, TimeoutError):
            return ProviderError(f"timed out ({type(error).__name__})", retryable=True)
        return ProviderError(f"{type(error).__name__}: {error}", retryable=True)

    def _status_error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> ProviderError:
        return ProviderError(
            f"HTTP {status}: {_error_message(raw)}",
            retryable=is_retryable_status(status),
            status=status,
            retry_after=parse_retry_after(headers),
        )


def _env_proxy(url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for url, if any (as httpx's trust_env found it)."""
    try:
        proxy, auth = aiohttp.helpers.get_env_proxy_for_url(url)
    except LookupError:
        return None, None
    return proxy, auth


_NEWLINE = re.compile(r"\r\n|\r|\n")


async def iter_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """The lines of a UTF-8 body that comes in chunks (split on \\n, \\r\\n or \\r, as
    httpx's ``aiter_lines``; no limit on a line's length)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = ""
    async for chunk in chunks:
        text = pending + decoder.decode(chunk)
        held = ""
        if text.endswith("\r"):  # its \n may come with the next chunk
            text, held = text[:-1], "\r"
        *lines, pending = _NEWLINE.split(text)
        pending += held
        for line in lines:
            yield line
    *lines, last = _NEWLINE.split(pending + decoder.decode(b"", final=True))
    for line in lines:
        yield line
    if last:
        yield last


class StreamAccumulator(ABC):
    """Folds one provider's SSE events into deltas and a final ChatResult."""

    done: bool = False

    @abstractmethod
    def feed(self, event: str, data: str) -> str | None:
        """Take one SSE event; return the text delta it carries, if any."""

    @abstractmethod
    def result(self) -> ChatResult: ...


async def iter_sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream body."""
    event = ""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            event = value
        elif key == "data":
            data.append(value)
    if data:
        yield event or "message", "\n".join(data)


def whitespace_tokens(texts: Sequence[str]) -> int:
    return sum(len(text.split()) for text in texts)
