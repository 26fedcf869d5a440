"""The router's retry schedule, with its sleep recorded (no I/O): exponential backoff with
jitter, the provider's Retry-After instead when it sends one, no retry of a 4xx."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from services.ai.providers.base import ChatRequest, ChatResult, Provider, ProviderError
from services.ai.router import CompletionCall, Router
from services.ai.settings import AiCatalog


class Failing(Provider):
    """Fails with the given errors, one per call, then answers."""

    def __init__(self, errors: list[ProviderError]) -> None:
        super().__init__("flaky")
        self.errors = errors
        self.calls = 0

    async def complete(self, request: ChatRequest) -> ChatResult:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return ChatResult(text="ok")

    def stream(self, request: ChatRequest) -> AsyncGenerator[str | ChatResult, None]:
        raise NotImplementedError


def _router(provider: Provider, slept: list[float], max_attempts: int = 5) -> Router:
    catalog = AiCatalog.model_validate(
        {
            "providers": {
                "flaky": {
                    "type": "echo",
                    "max_attempts": max_attempts,
                    "backoff_initial_s": 0.5,
                    "backoff_max_s": 2.0,
                }
            },
            "models": [{"name": "m", "provider": "flaky"}],
            "default_model": "m",
        }
    )

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return Router(catalog, {"flaky": provider}, sleep=sleep)


def _overloaded(retry_after: float | None = None) -> ProviderError:
    return ProviderError("HTTP 503: busy", retryable=True, status=503, retry_after=retry_after)


async def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    slept: list[float] = []
    provider = Failing([_overloaded() for _ in range(4)])
    completion = await _router(provider, slept).complete(CompletionCall(prompt="hi"))
    assert completion.text == "ok"
    assert provider.calls == 5
    # initial_s * 2**(attempt-1), at most max_s, plus up to initial_s of jitter
    for delay, base in zip(slept, [0.5, 1.0, 2.0, 2.0], strict=True):
        assert base <= delay <= base + 0.5
    assert [r["fields"]["attempt"] for r in completion.logs] == [1, 2, 3, 4]
    assert completion.logs[0]["message"].startswith(
        "LLM call to m (flaky) failed (attempt 1 of 5): HTTP 503: busy; retrying in "
    )


async def test_retry_after_replaces_the_backoff() -> None:
    slept: list[float] = []
    provider = Failing([_overloaded(retry_after=0.25)])
    await _router(provider, slept).complete(CompletionCall(prompt="hi"))
    assert slept == [0.25]


@pytest.mark.parametrize(
    "error",
    [
        ProviderError("HTTP 400: bad", retryable=False, status=400),
        _overloaded(retry_after=600.0),  # over retry_after_max_s: the chain moves on at once
    ],
)
async def test_no_retry(error: ProviderError) -> None:
    slept: list[float] = []
    provider = Failing([error])
    with pytest.raises(Exception, match="no model of the chain could answer"):
        await _router(provider, slept).complete(CompletionCall(prompt="hi"))
    assert provider.calls == 1
    assert slept == []


async def test_attempts_run_out() -> None:
    slept: list[float] = []
    provider = Failing([_overloaded() for _ in range(5)])
    with pytest.raises(Exception, match="no model of the chain could answer"):
        await _router(provider, slept, max_attempts=3).complete(CompletionCall(prompt="hi"))
    assert provider.calls == 3
    assert len(slept) == 2
