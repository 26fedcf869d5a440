"""The `heddle` CLI against the gateway (over the fake workflow service)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from libs.cli.follow import ProgressState, progress_line
from libs.cli.inputs import parse_inputs
from libs.cli.main import main
from tests.gateway.conftest import Fakes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_inputs_parse_as_json_when_they_can(tmp_path: Path) -> None:
    file = tmp_path / "inputs.yaml"
    file.write_text("name: from-file\nn: 1\n")
    inputs = parse_inputs(["n=2", "flag=true", "text=hello world", 'obj={"a": 1}', "e="], str(file))
    assert inputs == {
        "name": "from-file",
        "n": 2,
        "flag": True,
        "text": "hello world",
        "obj": {"a": 1},
        "e": "",
    }


def test_progress_lines() -> None:
    started = ProgressState()
    assert (
        progress_line(
            {"type": "node.started", "node_id": "f", "ts": "2025-01-01T00:00:00Z"}, started
        )
        is None
    )
    done = {"type": "node.completed", "node_id": "f", "ts": "2025-01-01T00:00:00.012Z"}
    assert progress_line(done, started) == "✓ f                succeeded 12 ms"
    failed = {"type": "node.failed", "node_id": "x", "data": {"error": {"message": "boom"}}}
    assert progress_line(failed, started) == "✗ x                failed: boom"
    assert (
        progress_line({"type": "node.skipped", "node_id": "y"}, started)
        == "↷ y                skipped"
    )
    waiting = progress_line({"type": "node.waiting", "node_id": "z"}, started)
    assert waiting == "… z                waiting for input"


async def test_run_creates_then_versions_and_follows(
    live_gateway: str, fakes: Fakes, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://{live_gateway}"
    hello = str(EXAMPLES / "hello.yaml")
    code = await asyncio.to_thread(main, ["--server", url, "run", hello, "--input", "name=Ada"])
    assert code == 0
    out = capsys.readouterr().out
    assert "✓ greet" in out and "succeeded" in out
    assert json.loads(out[out.index("{") :]) == {"name": "Ada"}  # the fake echoes inputs

    changed = await asyncio.to_thread(
        main, ["--server", url, "run", hello, "-i", "name=Bo", "--json"]
    )
    assert changed == 0
    execution = json.loads(capsys.readouterr().out)
    assert execution["status"] == "succeeded"
    assert len(fakes.workflow.workflows) == 1  # same name: found and reused, not duplicated

    status = await asyncio.to_thread(main, ["--server", url, "status", execution["id"]])
    assert status == 0
    table = capsys.readouterr().out
    assert "NODE" in table and "greet" in table and "template" in table


async def test_validate_reports_issues(
    live_gateway: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://{live_gateway}"
    assert (
        await asyncio.to_thread(main, ["--server", url, "validate", str(EXAMPLES / "hello.yaml")])
        == 0
    )
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"name": "b", "nodes": [{"id": "a", "type": "teleport"}]}))
    assert await asyncio.to_thread(main, ["--server", url, "validate", str(broken)]) == 1
    assert "unknown_node_type" in capsys.readouterr().out


async def test_api_errors_are_one_line_and_exit_1(
    live_gateway: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(main, ["--server", f"http://{live_gateway}", "status", "nope"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: not_found: ") and len(err.strip().splitlines()) == 1
