"""Settings of the AI service: providers and models, from a file and/or the environment.

The model catalog is a document ``{"providers": {name: ProviderConfig}, "models":
[ModelConfig], "default_model": str}`` read from the YAML/JSON file named by
HEDDLE_AI_CONFIG, then overlaid by HEDDLE_AI_PROVIDERS (a JSON object of providers) and
HEDDLE_AI_MODELS (a JSON list of models, or a whole document). The offline ``echo``
provider and model are always there unless the catalog redefines them.

API keys are never part of the catalog: a provider names an environment variable
(``api_key_env``), looked up in the environment and then in the secrets file
(HEDDLE_AI_SECRETS_FILE, a YAML/JSON mapping), or a file holding the key (``api_key_file``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from libs.common.settings import CommonSettings

ECHO = "echo"


class ProviderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["openai", "anthropic", "echo"] = Field(
        description="Wire format: openai (any OpenAI-compatible server), anthropic or echo."
    )
    base_url: str | None = Field(
        default=None,
        description="Endpoint root, e.g. http://localhost:11434/v1 for Ollama; the vendor's "
        "public API when unset.",
    )
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable (or secrets-file key) holding the API key.",
    )
    api_key_file: str | None = Field(default=None, description="File whose content is the key.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers.")
    timeout_s: float = Field(default=60.0, gt=0, description="Read timeout of one HTTP call.")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="Connect timeout.")
    max_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts per call on 429/5xx/timeouts (1: none)."
    )
    backoff_initial_s: float = Field(default=0.5, ge=0, description="First retry delay.")
    backoff_max_s: float = Field(default=8.0, ge=0, description="Largest retry delay.")
    retry_after_max_s: float = Field(
        default=30.0,
        ge=0,
        description="Longest Retry-After honoured; a longer one moves on to the fallback.",
    )
    breaker_failure_threshold: int = Field(
        default=5, ge=1, description="Failed calls in a row that open the circuit breaker."
    )
    breaker_cooldown_s: float = Field(
        default=30.0, ge=0, description="Time the breaker stays open before one probe call."
    )
    default_max_tokens: int = Field(
        default=1024, gt=0, description="max_tokens when a request sets none (Anthropic needs one)."
    )


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name workflows use (the `model` param).")
    provider: str = Field(description="Key of the provider serving it.")
    model: str | None = Field(default=None, description="Upstream model id; `name` when unset.")
    description: str = Field(default="", description="Shown by ListModels.")
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Models tried, in order, when this one fails and the request names no chain.",
    )

    @property
    def upstream(self) -> str:
        return self.model or self.name


class AiCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: list[ModelConfig] = Field(default_factory=list)
    default_model: str = ECHO
    default_embedding_model: str = Field(
        default=ECHO,
        description="Model Embed uses when a request names none (echo: the offline embedder).",
    )

    @model_validator(mode="after")
    def _check_references(self) -> AiCatalog:
        self.providers.setdefault(ECHO, ProviderConfig(type="echo"))
        if not any(m.name == ECHO for m in self.models):
            self.models.append(
                ModelConfig(name=ECHO, provider=ECHO, description="Deterministic offline echo.")
            )
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate model names: {duplicates}")
        for model in self.models:
            if model.provider not in self.providers:
                raise ValueError(f"model {model.name!r} names unknown provider {model.provider!r}")
            unknown = [f for f in model.fallbacks if f not in names]
            if unknown:
                raise ValueError(f"model {model.name!r} has unknown fallbacks {unknown}")
        if self.default_model not in names:
            raise ValueError(f"default_model {self.default_model!r} is not a configured model")
        if self.default_embedding_model not in names:
            raise ValueError(
                f"default_embedding_model {self.default_embedding_model!r} "
                "is not a configured model"
            )
        return self

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


class AiSettings(CommonSettings):
    """Options of the AI service (HEDDLE_ prefix)."""

    ai_config: str | None = Field(
        default=None, description="Path of a YAML or JSON catalog of providers and models."
    )
    ai_providers: dict[str, Any] | None = Field(
        default=None, description="JSON object of providers, merged over the file's."
    )
    ai_models: list[Any] | dict[str, Any] | None = Field(
        default=None,
        description="JSON list of models (or a whole catalog document), merged over the file's.",
    )
    ai_default_model: str | None = Field(
        default=None, description="Model used when a request names none (echo when unset)."
    )
    ai_secrets_file: str | None = Field(
        default=None, description="YAML/JSON mapping of secret names (api_key_env) to values."
    )

    def catalog(self) -> AiCatalog:
        """The validated catalog; raises ValueError naming the setting that is wrong."""
        document: dict[str, Any] = {"providers": {}, "models": []}
        if self.ai_config:
            loaded = _read_document(self.ai_config, "HEDDLE_AI_CONFIG")
            document = {**document, **loaded}
        overlay: dict[str, Any] = {}
        if isinstance(self.ai_models, dict):
            overlay = dict(self.ai_models)
        elif isinstance(self.ai_models, list):
            overlay = {"models": self.ai_models}
        if self.ai_providers:
            overlay["providers"] = {**overlay.get("providers", {}), **self.ai_providers}
        document["providers"] = {**document["providers"], **overlay.get("providers", {})}
        by_name = {m.get("name"): m for m in document["models"] if isinstance(m, dict)}
        by_name.update({m.get("name"): m for m in overlay.get("models", []) if isinstance(m, dict)})
        document["models"] = list(by_name.values())
        for key in ("default_model", "default_embedding_model"):
            if key in overlay:
                document[key] = overlay[key]
        if self.ai_default_model:
            document["default_model"] = self.ai_default_model
        try:
            return AiCatalog.model_validate(document)
        except ValidationError as error:
            raise ValueError(
                f"invalid AI catalog (HEDDLE_AI_CONFIG / HEDDLE_AI_MODELS / HEDDLE_AI_PROVIDERS): "
                f"{error}"
            ) from error

    def secrets(self) -> dict[str, str]:
        if not self.ai_secrets_file:
            return {}
        return {
            str(k): str(v)
            for k, v in _read_document(self.ai_secrets_file, "HEDDLE_AI_SECRETS_FILE").items()
        }


def _read_document(path: str, variable: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ValueError(f"{variable}: cannot read {path}: {error}") from error
    try:
        value = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ValueError(f"{variable}: {path} is not valid YAML/JSON: {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"{variable}: {path} must hold a mapping")
    return value


def resolve_api_key(provider: ProviderConfig, secrets: dict[str, str]) -> str | None:
    """The provider's key from the environment, the secrets file or a key file."""
    if provider.api_key_env:
        value = os.environ.get(provider.api_key_env) or secrets.get(provider.api_key_env)
        if value:
            return value.strip()
    if provider.api_key_file:
        try:
            return Path(provider.api_key_file).read_text().strip() or None
        except OSError as error:
            raise ValueError(f"api_key_file {provider.api_key_file}: {error}") from error
    return None
