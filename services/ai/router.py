"""Routes a completion through its fallback chain, with retries and a breaker per provider.

For each model of the chain, in order: skip it when its provider's breaker is open; else
call it, retrying 429/5xx/timeouts (tenacity, exponential backoff with jitter, or the
provider's Retry-After when it sends one); the first model that answers serves the call
and the answer names it, with the models tried before it. Streams fall back the same way
until the first token has been sent; after that a failure ends the stream.

A caller that retries by its own policy sends ``max_attempts`` 1 (an llm or agent node with
``retry.max_attempts`` > 1 does): then every model of the chain is tried once per call and
the node's policy alone decides about retries, so the provider is called at most
``retry.max_attempts`` times per model, not that times the provider's ``max_attempts``.

What a call went through (each retry, each model that failed) is logged with the caller's
execution and node ids, and handed back to the caller as log records (``Completion.logs``,
or ``details.logs`` of the error), so that a node returns them with its outcome and they
reach the run's logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential,
    wait_random,
)

from libs.common import jsonutil
from libs.common.errors import (
    FailedPrecondition,
    HeddleError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.ai.breaker import BreakerState, CircuitBreaker
from services.ai.providers.base import (
    ROLES,
    ChatRequest,
    ChatResult,
    EmbedResult,
    Provider,
    ProviderError,
)
from services.ai.settings import AiCatalog, ProviderConfig

log = logging.getLogger(__name__)

LLM_TOKENS = Counter(
    "heddle_llm_tokens_total",
    "LLM tokens used, by model and kind (prompt/completion).",
    ["model", "kind"],
)
LLM_REQUESTS = Counter(
    "heddle_llm_requests_total",
    "LLM calls per model of a chain and their outcome (success, error, breaker_open).",
    ["model", "provider", "outcome"],
)
LLM_RETRIES = Counter("heddle_llm_retries_total", "Retried LLM calls.", ["model", "provider"])
LLM_LATENCY = Histogram(
    "heddle_llm_request_seconds", "Time to a complete LLM answer.", ["model", "provider"]
)

T = TypeVar("T")


@dataclass
class CompletionCall:
    """What the caller asks for, in the internal form."""

    models: list[str] = field(default_factory=list)  # empty: the default model
    prompt: str = ""
    system: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    provider: str = ""  # serve the named models from this provider, configured or not
    deadline: float | None = None  # time.monotonic() value after which nobody listens
    tags: dict[str, str] = field(default_factory=dict)  # execution_id, node_id, tenant_id
    # Attempts per model, at most the provider's max_attempts; None: the provider's.
    max_attempts: int | None = None
    # Log records of what the call went through, handed back to the caller.
    logs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    tool_calls: list[dict[str, Any]]
    prompt_tokens: int
    completion_tokens: int
    model: str
    provider: str
    fallbacks_tried: list[str]
    finish_reason: str
    logs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Embeddings:
    vectors: list[list[float]]
    model: str
    provider: str
    prompt_tokens: int
    fallbacks_tried: list[str]


#: Texts per Embed call at most (OpenAI's own limit is 2048 inputs).
MAX_EMBED_TEXTS = 2048


@dataclass
class ProviderSlot:
    name: str
    provider: Provider
    config: ProviderConfig
    breaker: CircuitBreaker


@dataclass
class Route:
    model: str  # the name the caller used
    upstream: str  # the provider's id of it
    slot: ProviderSlot


@dataclass
class _Failure:
    route: Route
    message: str
    status: int | None = None
    retryable: bool = True


#: Log records handed back per call at most.
MAX_CALL_LOGS = 20
#: Bytes (as JSON) of a failed call's error: message and details travel in a gRPC trailer,
#: and a trailer over the metadata limit (8 KiB soft, 16 KiB hard) replaces the error with
#: RESOURCE_EXHAUSTED and no details at all. Log records fill what the rest leaves.
MAX_ERROR_BYTES = 4500
#: Characters of a provider's error text kept in messages, details and log records.
_MAX_LOGGED_ERROR = 200


def _label(route: Route) -> str:
    """How messages name a route: the model, and its provider when the names differ."""
    if route.model == route.slot.name:
        return route.model
    return f"{route.model} ({route.slot.name})"


def _note(call: CompletionCall, level: int, message: str, route: Route, **fields: Any) -> None:
    """Log one step of a call with the caller's ids, and keep it for the caller."""
    data = {"model": route.model, "provider": route.slot.name, **fields}
    log.log(level, message, extra={**data, **call.tags})
    if len(call.logs) < MAX_CALL_LOGS:
        call.logs.append(
            {
                "level": logging.getLevelName(level).lower(),
                "message": message,
                "logger": log.name,
                "service": "ai",
                "fields": data,
            }
        )


def _error_logs(logs: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The first records of logs that fit budget bytes, and a note of the rest."""
    kept: list[dict[str, Any]] = []
    size = 0
    for record in logs:
        size += len(jsonutil.dumps(record))
        if size > budget:
            kept.append(
                {
                    "level": "warning",
                    "message": f"{len(logs) - len(kept)} more log records of this call "
                    "are in the ai service's log",
                    "logger": log.name,
                    "service": "ai",
                }
            )
            break
        kept.append(record)
    return kept


def _short(text: str) -> str:
    if len(text) <= _MAX_LOGGED_ERROR:
        return text
    return text[: _MAX_LOGGED_ERROR - 1] + "\u2026"


def normalize_messages(call: CompletionCall) -> list[dict[str, Any]]:
    """system + history + prompt as one validated list of internal messages."""
    messages: list[dict[str, Any]] = []
    if call.system:
        messages.append({"role": "system", "content": call.system})
    for index, raw in enumerate(call.messages):
        if not isinstance(raw, dict) or raw.get("role") not in ROLES:
            raise InvalidArgument(
                f"messages[{index}]: role must be one of {list(ROLES)}",
                details=[{"path": f"messages[{index}].role", "message": "invalid role"}],
            )
        content = raw.get("content")
        message: dict[str, Any] = {
            "role": raw["role"],
            "content": content if isinstance(content, str) else _as_text(content),
        }
        if raw.get("tool_calls"):
            message["tool_calls"] = _check_tool_calls(index, raw["tool_calls"])
        if raw["role"] == "tool":
            if not raw.get("tool_call_id"):
                raise InvalidArgument(
                    f"messages[{index}]: a tool message needs tool_call_id",
                    details=[{"path": f"messages[{index}].tool_call_id", "message": "required"}],
                )
            message["tool_call_id"] = str(raw["tool_call_id"])
        messages.append(message)
    if call.prompt:
        messages.append({"role": "user", "content": call.prompt})
    if not any(m["role"] != "system" for m in messages):
        raise InvalidArgument("a completion needs a prompt or at least one non-system message")
    return messages


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, default=str)


def _check_tool_calls(index: int, calls: Any) -> list[dict[str, Any]]:
    if not isinstance(calls, list) or not all(
        isinstance(c, dict) and c.get("id") and c.get("name") for c in calls
    ):
        raise InvalidArgument(
            f"messages[{index}].tool_calls: each needs id, name and arguments",
            details=[{"path": f"messages[{index}].tool_calls", "message": "invalid tool call"}],
        )
    return [
        {"id": str(c["id"]), "name": str(c["name"]), "arguments": c.get("arguments") or {}}
        for c in calls
    ]


def _check_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise InvalidArgument(
                f"tools[{index}]: a tool needs a name",
                details=[{"path": f"tools[{index}].name", "message": "required"}],
            )
    return tools


class Router:
    def __init__(
        self,
        catalog: AiCatalog,
        providers: dict[str, Provider],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self._sleep = sleep
        self._clock = clock
        self.slots = {
            name: ProviderSlot(
                name=name,
                provider=provider,
                config=catalog.providers[name],
                breaker=CircuitBreaker(
                    catalog.providers[name].breaker_failure_threshold,
                    catalog.providers[name].breaker_cooldown_s,
                    clock,
                ),
            )
            for name, provider in providers.items()
        }

    async def aclose(self) -> None:
        for slot in self.slots.values():
            await slot.provider.aclose()

    # ------------------------------------------------------------------ catalog

    def routes(self, call: CompletionCall) -> list[Route]:
        names = list(dict.fromkeys(call.models)) or [self.catalog.default_model]
        if len(names) == 1 and not call.provider:
            config = self.catalog.model(names[0])
            if config is not None:
                names += [f for f in config.fallbacks if f not in names]
        return [self._route(name, call.provider) for name in names]

    def _route(self, name: str, provider: str) -> Route:
        config = self.catalog.model(name)
        if provider:
            slot = self.slots.get(provider)
            if slot is None:
                raise NotFound(
                    f"unknown provider {provider!r}; configured: {sorted(self.slots)}",
                    details={"provider": provider, "known": sorted(self.slots)},
                )
            same = config is not None and config.provider == provider
            return Route(name, config.upstream if config and same else name, slot)
        if config is None:
            known = [m.name for m in self.catalog.models]
            raise NotFound(
                f"unknown model {name!r}; configured models: {known}",
                details={"model": name, "known": known},
            )
        return Route(name, config.upstream, self.slots[config.provider])

    def models(self) -> list[dict[str, Any]]:
        """Every configured model with its provider's health."""
        listed = []
        for model in self.catalog.models:
            slot = self.slots[model.provider]
            state = slot.breaker.state
            listed.append(
                {
                    "name": model.name,
                    "provider": slot.name,
                    "healthy": state is not BreakerState.OPEN,
                    "breaker_state": state.value,
                    "info": {
                        **slot.provider.describe(),
                        "upstream_model": model.upstream,
                        "description": model.description,
                        "fallbacks": model.fallbacks,
                        "consecutive_failures": slot.breaker.consecutive_failures,
                    },
                }
            )
        return listed

    # ------------------------------------------------------------------ calls

    def _request(
        self, call: CompletionCall, route: Route, messages: list[dict[str, Any]]
    ) -> ChatRequest:
        return ChatRequest(
            model=route.upstream,
            messages=messages,
            temperature=call.temperature,
            max_tokens=call.max_tokens,
            tools=call.tools,
        )

    async def complete(self, call: CompletionCall) -> Completion:
        messages = normalize_messages(call)
        call.tools = _check_tools(call.tools)
        routes = self.routes(call)
        tried: list[str] = []
        failures: list[_Failure] = []
        for route in routes:
            if not route.slot.breaker.allow():
                self._skip(call, route, tried, failures)
                continue
            started = self._clock()
            request = self._request(call, route, messages)
            try:
                result = await self._with_retries(
                    route, call, partial(route.slot.provider.complete, request)
                )
            except ProviderError as error:
                self._failed(call, route, error, tried, failures)
                continue
            except BaseException:
                route.slot.breaker.release()
                raise
            return self._succeeded(route, call, result, tried, started)
        raise _exhausted(failures, call.logs)

    async def embed(
        self, call: CompletionCall, texts: list[str], dimensions: int | None = None
    ) -> Embeddings:
        """Vectors of texts from the first model of the chain that answers (retries, breaker)."""
        if not texts:
            raise InvalidArgument("texts: at least one text to embed")
        if len(texts) > MAX_EMBED_TEXTS:
            raise InvalidArgument(f"texts: at most {MAX_EMBED_TEXTS} per call, got {len(texts)}")
        if not call.models:
            call.models = [self.catalog.default_embedding_model]
        tried: list[str] = []
        failures: list[_Failure] = []
        for route in self.routes(call):
            if not route.slot.breaker.allow():
                self._skip(call, route, tried, failures)
                continue
            started = self._clock()
            try:
                result: EmbedResult = await self._with_retries(
                    route,
                    call,
                    partial(route.slot.provider.embed, route.upstream, texts, dimensions),
                )
            except ProviderError as error:
                self._failed(call, route, error, tried, failures)
                continue
            except BaseException:
                route.slot.breaker.release()
                raise
            route.slot.breaker.record_success()
            LLM_REQUESTS.labels(route.model, route.slot.name, "success").inc()
            LLM_TOKENS.labels(route.model, "prompt").inc(result.prompt_tokens)
            LLM_LATENCY.labels(route.model, route.slot.name).observe(self._clock() - started)
            return Embeddings(
                result.vectors, route.model, route.slot.name, result.prompt_tokens, tried
            )
        raise _exhausted(failures, call.logs)

    async def stream(self, call: CompletionCall) -> AsyncIterator[str | Completion]:
        """Text deltas, then one Completion."""
        messages = normalize_messages(call)
        call.tools = _check_tools(call.tools)
        routes = self.routes(call)
        tried: list[str] = []
        failures: list[_Failure] = []
        for route in routes:
            if not route.slot.breaker.allow():
                self._skip(call, route, tried, failures)
                continue
            started = self._clock()
            request = self._request(call, route, messages)
            try:
                first, pieces = await self._with_retries(
                    route, call, partial(_open_stream, route.slot.provider, request)
                )
            except ProviderError as error:
                self._failed(call, route, error, tried, failures)
                continue
            except BaseException:
                route.slot.breaker.release()
                raise
            try:
                piece = first
                while not isinstance(piece, ChatResult):
                    yield piece
                    piece = await anext(pieces)
            except ProviderError as error:
                self._failed(call, route, error, [], [])
                raise Unavailable(
                    f"stream from {_label(route)} broke off: {error.message}",
                    details={
                        "model": route.model,
                        "provider": route.slot.name,
                        "logs": _error_logs(call.logs, MAX_ERROR_BYTES // 2),
                    },
                ) from error
            except BaseException:
                route.slot.breaker.release()
                raise
            finally:
                await pieces.aclose()
            yield self._succeeded(route, call, piece, tried, started)
            return
        raise _exhausted(failures, call.logs)

    async def _with_retries(
        self, route: Route, call: CompletionCall, operation: Callable[[], Awaitable[T]]
    ) -> T:
        config = route.slot.config
        # A half-open breaker lets one probe through: one attempt, no retries. A caller that
        # retries by its own policy asks for fewer attempts (1), never for more.
        attempts = config.max_attempts
        if call.max_attempts is not None:
            attempts = max(1, min(attempts, call.max_attempts))
        if route.slot.breaker.state is BreakerState.HALF_OPEN:
            attempts = 1
        # Exponential backoff with jitter, so that replicas don't retry in lock-step.
        backoff = wait_exponential(
            multiplier=config.backoff_initial_s, max=config.backoff_max_s
        ) + wait_random(0, config.backoff_initial_s)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, ProviderError) and error.retry_after is not None:
                return error.retry_after
            return float(backoff(state))

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= attempts:
                return True
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, ProviderError) and error.retry_after is not None:
                if error.retry_after > config.retry_after_max_s:
                    return True  # not worth the wait: the fallback may answer now
                return self._past_deadline(call, error.retry_after)
            return self._past_deadline(call, 0.0)

        def before_sleep(state: RetryCallState) -> None:
            LLM_RETRIES.labels(route.model, route.slot.name).inc()
            error = state.outcome.exception() if state.outcome else None
            text = _short(error.message if isinstance(error, ProviderError) else str(error))
            delay = round(state.upcoming_sleep, 3)
            _note(
                call,
                logging.WARNING,
                f"LLM call to {_label(route)} failed (attempt {state.attempt_number} of "
                f"{attempts}): {text}; retrying in {delay:g} s",
                route,
                attempt=state.attempt_number,
                max_attempts=attempts,
                delay_s=delay,
            )

        retrying = AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.retryable),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(operation)

    def _past_deadline(self, call: CompletionCall, wait: float) -> bool:
        return call.deadline is not None and self._clock() + wait >= call.deadline

    def _skip(
        self, call: CompletionCall, route: Route, tried: list[str], failures: list[_Failure]
    ) -> None:
        LLM_REQUESTS.labels(route.model, route.slot.name, "breaker_open").inc()
        tried.append(route.model)
        message = f"circuit breaker of {route.slot.name} is open"
        failures.append(_Failure(route, message))
        _note(call, logging.WARNING, f"LLM call to {_label(route)} skipped: {message}", route)

    def _failed(
        self,
        call: CompletionCall,
        route: Route,
        error: ProviderError,
        tried: list[str],
        failures: list[_Failure],
    ) -> None:
        LLM_REQUESTS.labels(route.model, route.slot.name, "error").inc()
        if error.retryable:
            route.slot.breaker.record_failure()
        else:
            route.slot.breaker.record_success()  # it answered: the provider is up
        tried.append(route.model)
        text = _short(error.message)
        failures.append(_Failure(route, text, error.status, error.retryable))
        _note(
            call,
            logging.WARNING,
            f"LLM call to {_label(route)} failed: {text}",
            route,
            status=error.status,
            retryable=error.retryable,
        )

    def _succeeded(
        self,
        route: Route,
        call: CompletionCall,
        result: ChatResult,
        tried: list[str],
        started: float,
    ) -> Completion:
        route.slot.breaker.record_success()
        usage = result.usage
        LLM_REQUESTS.labels(route.model, route.slot.name, "success").inc()
        LLM_TOKENS.labels(route.model, "prompt").inc(usage.prompt_tokens)
        LLM_TOKENS.labels(route.model, "completion").inc(usage.completion_tokens)
        LLM_LATENCY.labels(route.model, route.slot.name).observe(self._clock() - started)
        log.info(
            "LLM call",
            extra={
                "model": route.model,
                "provider": route.slot.name,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "fallbacks_tried": tried,
                **call.tags,
            },
        )
        return Completion(
            text=result.text,
            tool_calls=result.tool_calls,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            model=route.model,
            provider=route.slot.name,
            fallbacks_tried=list(tried),
            finish_reason=result.finish_reason,
            logs=list(call.logs),
        )


async def _open_stream(
    provider: Provider, request: ChatRequest
) -> tuple[str | ChatResult, AsyncGenerator[str | ChatResult, None]]:
    # Retries and fallbacks stay possible until the first piece has arrived.
    pieces = provider.stream(request)
    try:
        first = await anext(pieces)
    except BaseException:
        await pieces.aclose()
        raise
    return first, pieces


def _exhausted(failures: list[_Failure], logs: list[dict[str, Any]]) -> HeddleError:
    attempts = [
        {
            "model": f.route.model,
            "provider": f.route.slot.name,
            "error": f.message,
            "status": f.status,
        }
        for f in failures
    ]
    summary = "; ".join(f"{_label(f.route)}: {f.message}" for f in failures)
    message = f"no model of the chain could answer ({summary})"
    # the message travels twice (the status' text and the error trailer)
    room = MAX_ERROR_BYTES - 2 * len(message.encode()) - len(jsonutil.dumps(attempts))
    details: dict[str, Any] = {"attempts": attempts, "logs": _error_logs(logs, room)}
    answered = [f for f in failures if not f.retryable]
    if answered and len(answered) == len(failures):
        if all(f.status in (401, 403) for f in answered):
            return FailedPrecondition(message, details)
        return InvalidArgument(message, details)
    if failures and all(f.status == 429 for f in failures):
        return ResourceExhausted(message, details)
    return Unavailable(message, details)
