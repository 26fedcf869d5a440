"""The AI catalog from a file and the environment, and the echo scripting convention."""

from __future__ import annotations

import pytest

from services.ai.providers.echo import echo_answer, parse_tool_directives
from services.ai.server import build_router
from services.ai.settings import AiSettings


def test_catalog_from_yaml_file_overlaid_by_env(tmp_path, monkeypatch) -> None:
    config = tmp_path / "ai.yaml"
    config.write_text(
        "providers:\n"
        "  ollama: {type: openai, base_url: 'http://127.0.0.1:11434/v1'}\n"
        "models:\n"
        "  - {name: llama, provider: ollama, model: 'llama3.1:8b'}\n"
        "default_model: llama\n"
    )
    monkeypatch.setenv("HEDDLE_AI_CONFIG", str(config))
    monkeypatch.setenv(
        "HEDDLE_AI_MODELS", '[{"name": "qwen", "provider": "ollama", "fallbacks": ["llama"]}]'
    )
    catalog = AiSettings().catalog()
    assert [m.name for m in catalog.models] == ["llama", "qwen", "echo"]
    assert catalog.default_model == "llama"
    assert catalog.model("llama").upstream == "llama3.1:8b"  # type: ignore[union-attr]
    assert set(catalog.providers) == {"ollama", "echo"}


def test_bad_catalog_fails_fast_naming_the_setting(monkeypatch) -> None:
    monkeypatch.setenv("HEDDLE_AI_MODELS", '[{"name": "x", "provider": "nowhere"}]')
    with pytest.raises(ValueError, match=r"(?s)HEDDLE_AI_MODELS.*unknown provider 'nowhere'"):
        AiSettings().catalog()


def test_api_key_comes_from_env_and_is_not_in_the_description(monkeypatch) -> None:
    monkeypatch.setenv("HEDDLE_TEST_KEY", "sk-hidden")
    settings = AiSettings(
        ai_providers={"vendor": {"type": "openai", "api_key_env": "HEDDLE_TEST_KEY"}}
    )
    router = build_router(settings)
    vendor = router.slots["vendor"].provider
    assert "sk-hidden" not in repr(vendor.describe())
    assert "sk-hidden" not in repr(router.models())


def test_echo_directives() -> None:
    text = 'a [[tool:calc {"x": [1, 2]}]] b [[tool:now]] [[tool:bad {oops}]] [[tool:list [1]]]'
    assert parse_tool_directives(text) == [("calc", {"x": [1, 2]}), ("now", {})]
    answer = echo_answer([{"role": "user", "content": '[[tool:srv.search {"q": "x"}]]'}])
    assert answer.tool_calls == [{"id": "echo_0_0", "name": "srv.search", "arguments": {"q": "x"}}]
    plain = echo_answer([{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}])
    assert (plain.text, plain.usage.prompt_tokens, plain.usage.completion_tokens) == (
        "echo: hi",
        2,
        2,
    )
