"""Fixtures of the CLI tests: the `heddle` command run as a user runs it (a subprocess, or a
real terminal through a pty) against the embedded stack of tests/conftest.py.

No API key is given to the CLI: like `make run`'s users, it relies on the development key
the embedded stack offers to loopback callers.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from libs.cli.stack import Stack

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
HEDDLE = str(Path(sys.executable).parent / "heddle")

ASK_YAML = """\
name: {name}
inputs:
  who: {{type: string, default: you}}
nodes:
  - id: start
    type: input
  - id: approve
    type: human_input
    params:
      prompt: "Approve {{{{ inputs.who }}}}?"
      schema:
        type: object
        properties:
          approved: {{type: boolean}}
          count: {{type: integer}}
          note: {{type: string}}
        required: [approved, count]
  - id: done
    type: output
    params:
      value: "{{{{ approve.data }}}}"
edges:
  - {{source: start, target: approve}}
  - {{source: approve, target: done}}
outputs:
  answer: "{{{{ done }}}}"
"""


def ask_workflow(directory: Path, name: str = "ask") -> Path:
    """A workflow that waits for a human_input answer {approved: bool, count: int, note}."""
    path = directory / f"{name}.yaml"
    path.write_text(ASK_YAML.format(name=name))
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli_env(server: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDDLE_")}
    env.pop("NO_COLOR", None)
    env.update({"HEDDLE_SERVER": server, "COLUMNS": "120", **extra})
    return env


async def heddle(
    server: str, *args: str, stdin: str | None = None, cwd: Path | None = None, **env: str
) -> Result:
    """Run `heddle args...` as a subprocess with piped output (not a terminal)."""
    process = await asyncio.create_subprocess_exec(
        HEDDLE,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(server, **env),
        cwd=cwd or REPO,
    )
    out, err = await process.communicate(stdin.encode() if stdin is not None else None)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


@pytest.fixture
def server(stack: Stack) -> str:
    return stack.gateway_url
