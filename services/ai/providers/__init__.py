"""LLM provider adapters behind one interface (see ``base.py``)."""

from __future__ import annotations

from typing import Any

from services.ai.providers.anthropic import AnthropicProvider
from services.ai.providers.base import Provider
from services.ai.providers.echo import EchoProvider
from services.ai.providers.openai import OpenAIProvider
from services.ai.settings import ProviderConfig

_DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}


def create_provider(name: str, config: ProviderConfig, api_key: str | None) -> Provider:
    """The adapter for one configured provider."""
    if config.type == "echo":
        return EchoProvider(name)
    common: dict[str, Any] = {
        "base_url": config.base_url or _DEFAULT_URLS[config.type],
        "api_key": api_key,
        "timeout_s": config.timeout_s,
        "connect_timeout_s": config.connect_timeout_s,
        "headers": config.headers,
    }
    if config.type == "anthropic":
        return AnthropicProvider(name, default_max_tokens=config.default_max_tokens, **common)
    return OpenAIProvider(name, **common)


__all__ = ["Provider", "create_provider"]
