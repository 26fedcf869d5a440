from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.node.executors.base import NodeError, NodeSettings, Services
from services.node.executors.http import parse_retry_after
from tests.node.conftest import RunNode


@pytest.fixture
def allow_local(services: Services) -> None:
    services.settings = NodeSettings(http_allow_hosts=["127.0.0.1"], http_max_response_bytes=1024)


@pytest.mark.usefixtures("allow_local")
async def test_get_json(run_node: RunNode, http_server: str) -> None:
    result = await run_node(
        "http_request",
        {
            "url": "{{ inputs.base }}/echo",
            "query": {"q": "a b", "n": 2},
            "headers": {"X-Trace": "{{ system.execution_id }}"},
        },
        context={"inputs": {"base": http_server}},
    )
    out = result.output
    assert set(out) == {"status", "headers", "body", "json"}
    assert out["status"] == 200
    assert out["headers"]["content-type"] == "application/json"
    assert out["json"]["method"] == "GET"
    assert out["json"]["path"] == "/echo?q=a+b&n=2"
    assert out["json"]["headers"]["x-trace"] == "ex1"


@pytest.mark.usefixtures("allow_local")
async def test_post_json_body_and_text_response(run_node: RunNode, http_server: str) -> None:
    posted = await run_node(
        "http_request", {"method": "POST", "url": f"{http_server}/echo", "json": {"k": [1]}}
    )
    assert posted.output["json"]["body"] == '{"k":[1]}'
    assert posted.output["json"]["headers"]["content-type"] == "application/json"
    text = await run_node("http_request", {"url": f"{http_server}/text"})
    assert text.output["body"] == "plain text"
    assert text.output["json"] is None


@pytest.mark.usefixtures("allow_local")
async def test_redirects_are_followed(run_node: RunNode, http_server: str) -> None:
    result = await run_node("http_request", {"url": f"{http_server}/redirect"})
    assert result.output["json"]["path"] == "/echo?redirected=1"


@pytest.mark.usefixtures("allow_local")
async def test_a_redirect_to_a_private_address_is_refused(
    run_node: RunNode, http_server: str
) -> None:
    with pytest.raises(NodeError) as caught:
        await run_node("http_request", {"url": f"{http_server}/redirect-to-metadata"})
    assert caught.value.type == "ForbiddenAddress"
    assert "169.254.169.254" in caught.value.message


async def test_loopback_is_refused_without_the_allow_list(
    run_node: RunNode, http_server: str
) -> None:
    with pytest.raises(NodeError) as caught:
        await run_node("http_request", {"url": f"{http_server}/echo"})
    assert caught.value.type == "ForbiddenAddress"
    assert not caught.value.retryable
    assert "HEDDLE_HTTP_ALLOW_HOSTS" in caught.value.message


@pytest.mark.usefixtures("allow_local")
@pytest.mark.parametrize(
    ("status", "retryable", "retry_after"),
    [(500, True, None), (503, True, None), (429, True, 7.0), (404, False, None)],
)
async def test_status_errors_are_classified(
    run_node: RunNode, http_server: str, status: int, retryable: bool, retry_after: float | None
) -> None:
    with pytest.raises(NodeError) as caught:
        await run_node("http_request", {"url": f"{http_server}/status/{status}"})
    error = caught.value
    assert error.type == "HttpError"
    assert error.retryable is retryable
    assert error.details["status"] == status
    assert error.details["retry_after"] == retry_after


@pytest.mark.usefixtures("allow_local")
async def test_timeouts_and_connection_errors_are_retryable(
    run_node: RunNode, http_server: str
) -> None:
    with pytest.raises(NodeError) as caught:
        await run_node("http_request", {"url": f"{http_server}/slow", "timeout_s": 0.2})
    assert (caught.value.type, caught.value.retryable) == ("Timeout", True)
    with pytest.raises(NodeError) as caught:
        await run_node("http_request", {"url": "http://127.0.0.1:1/"})
    assert (caught.value.type, caught.value.retryable) == ("ConnectionError", True)


@pytest.mark.usefixtures("allow_local")
async def test_response_size_is_bounded(run_node: RunNode, http_server: str) -> None:
    with pytest.raises(NodeError) as caught:
        await run_node("http_request", {"url": f"{http_server}/big"})
    assert (caught.value.type, caught.value.retryable) == ("ResponseTooLarge", False)


async def test_body_and_json_together_are_invalid(run_node: RunNode) -> None:
    with pytest.raises(NodeError) as caught:
        await run_node("http_request", {"url": "https://example.com", "body": "x", "json": {}})
    assert caught.value.type == "ValidationError"


def test_retry_after_accepts_seconds_and_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("12", now) == 12.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("garbage", now) is None
    assert parse_retry_after(None) is None
