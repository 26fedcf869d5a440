"""Embed RPC: the offline embedder (echo) and an OpenAI-compatible /v1/embeddings endpoint
(a local server speaking the protocol), with the service's retries, breaker and fallbacks."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from fake_llm import FakeLLM, error_reply
from heddle.v1 import ai_pb2

from libs.common.errors import from_rpc_error

FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.02, "timeout_s": 5}


def catalog(fake: FakeLLM, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {
            "tei": {"type": "openai", "base_url": fake.openai_url("tei"), **FAST, **extra},
            "claude": {"type": "anthropic", "base_url": fake.anthropic_url("claude"), **FAST},
        },
        "models": [
            {
                "name": "minilm",
                "provider": "tei",
                "model": "all-MiniLM-L6-v2",
                "fallbacks": ["echo"],
            },
            {"name": "sonnet", "provider": "claude"},
        ],
    }


async def test_offline_embedder_is_the_default_deterministic_and_unit_length(ai_service) -> None:
    stub = await ai_service()
    texts = ["The Zorblax archive is in Quenthar.", "Where is the Zorblax archive?", "bananas"]
    reply = await stub.Embed(ai_pb2.EmbedRequest(texts=texts), timeout=5)
    again = await stub.Embed(ai_pb2.EmbedRequest(model="echo", texts=texts), timeout=5)
    assert (reply.model, reply.provider) == ("echo", "echo")
    vectors = np.array([e.values for e in reply.embeddings])
    assert vectors.shape == (3, 512)
    assert np.allclose(vectors, np.array([e.values for e in again.embeddings]))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.4 > vectors[0] @ vectors[2]
    small = await stub.Embed(ai_pb2.EmbedRequest(texts=["x y"], dimensions=64), timeout=5)
    assert len(small.embeddings[0].values) == 64


async def test_openai_compatible_embeddings_in_input_order(ai_service, fake_llm) -> None:
    stub = await ai_service(catalog(fake_llm))
    reply = await stub.Embed(
        ai_pb2.EmbedRequest(model="minilm", texts=["a", "bbb"], dimensions=3), timeout=5
    )
    assert [list(e.values) for e in reply.embeddings] == [[1.0, 0.0, 1.0], [3.0, 1.0, 1.0]]
    assert (reply.model, reply.provider, reply.prompt_tokens) == ("minilm", "tei", 6)
    seen = fake_llm.calls("tei")[-1].body
    assert seen == {
        "model": "all-MiniLM-L6-v2",
        "input": ["a", "bbb"],
        "encoding_format": "float",
        "dimensions": 3,
    }


async def test_retries_a_503_then_falls_back_to_the_offline_embedder(ai_service, fake_llm) -> None:
    stub = await ai_service(catalog(fake_llm, max_attempts=2))
    fake_llm.script("tei", error_reply(503), error_reply(503))
    reply = await stub.Embed(ai_pb2.EmbedRequest(model="minilm", texts=["a b c"]), timeout=5)
    assert len(fake_llm.calls("tei")) == 2
    assert (reply.model, list(reply.fallbacks_tried)) == ("echo", ["minilm"])
    assert len(reply.embeddings[0].values) == 512


async def test_bad_requests_are_invalid_argument(ai_service, fake_llm) -> None:
    stub = await ai_service(catalog(fake_llm))
    for request, message in [
        (ai_pb2.EmbedRequest(texts=[]), "at least one text"),
        (ai_pb2.EmbedRequest(model="sonnet", texts=["x"]), "serve no embeddings"),
        (ai_pb2.EmbedRequest(texts=["x"], dimensions=3), "dimensions must be between"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Embed(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in from_rpc_error(caught.value).message
