"""`heddle` in a real terminal (a pty through pexpect): the live progress view, colour, and
the human_input prompt."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pexpect

from tests.cli.conftest import EXAMPLES, HEDDLE, REPO, ask_workflow, cli_env

# An SGR sequence that sets a foreground colour (30-37, 90-97, 38;...).
COLOUR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-8]|9[0-7])(?:;[0-9]+)*m")


def _spawn(server: str, *args: str, **env: str) -> pexpect.spawn:
    return pexpect.spawn(
        HEDDLE,
        list(args),
        env={**cli_env(server, TERM="xterm-256color"), **env},
        cwd=str(REPO),
        dimensions=(40, 120),
        encoding="utf-8",
        timeout=60,
    )


def _run_to_end(child: pexpect.spawn) -> tuple[str, int]:
    child.expect(pexpect.EOF)
    child.close()
    return str(child.before), int(child.exitstatus if child.exitstatus is not None else -1)


async def test_live_progress_in_colour_on_a_terminal(server: str) -> None:
    hello = str(EXAMPLES / "hello.yaml")
    output, code = await asyncio.to_thread(
        lambda: _run_to_end(_spawn(server, "run", hello, "-i", "name=Ada"))
    )
    assert code == 0, output
    assert COLOUR.search(output), "no colour on a terminal"
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    assert "hello v1  execution " in plain
    table = [line.split() for line in plain.splitlines() if line.strip().startswith("✓")]
    assert [row[1] for row in table[-3:]] == ["start", "greet", "done"]  # the live table
    assert "NODE" in plain and "Hello, Ada!" in plain

    monochrome, code = await asyncio.to_thread(
        lambda: _run_to_end(_spawn(server, "run", hello, "-i", "name=Bo", NO_COLOR="1"))
    )
    assert code == 0 and "Hello, Bo!" in monochrome
    assert not COLOUR.search(monochrome), "NO_COLOR is not honoured"


async def test_a_waiting_node_is_asked_for_on_a_terminal(server: str, tmp_path: Path) -> None:
    """Item 6: on a terminal, `run` asks for each field of the node's schema (typed, asked
    again when it does not parse) and submits the answer."""
    ask = str(ask_workflow(tmp_path))

    def converse() -> tuple[str, int]:
        child = _spawn(server, "run", ask)
        child.expect("asks: Approve you\\?")
        child.expect("approved")
        child.sendline("y")
        child.expect("count")
        child.sendline("many")
        child.expect("expected an integer, got 'many'")
        child.expect("count")
        child.sendline("3")
        child.expect("note")
        child.sendline("looks fine")
        return _run_to_end(child)

    output, code = await asyncio.to_thread(converse)
    assert code == 0, output
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    assert '"approved": true' in plain and '"count": 3' in plain
    assert '"note": "looks fine"' in plain
