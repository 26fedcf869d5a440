"""`heddle serve`: a banner whose commands work as printed, and a clear refusal when a port
is taken (a second `heddle serve`)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

from libs.cli.invocation import cli_command
from libs.cli.stack import free_port, taken_port
from tests.cli.conftest import EXAMPLES, HEDDLE, REPO

BARE_PATH = "/usr/local/bin:/usr/bin:/bin"  # what a new shell has: no .venv/bin


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDDLE_")}
    env["PATH"] = BARE_PATH
    return env


async def _shell(command: str, cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        cwd=cwd,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_banner_commands_work_as_printed_and_a_second_serve_is_refused(
    tmp_path: Path,
) -> None:
    """Item 4: the banner's `Try:` command and its curl hint work, as printed, in a shell
    without .venv/bin on PATH. Item 7: a second `heddle serve` says which port is taken."""
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    port = free_port()
    serve = await asyncio.create_subprocess_exec(
        HEDDLE,
        "serve",
        "--free-ports",
        "--port",
        str(port),
        cwd=tmp_path,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert serve.stdout is not None
    try:
        banner: list[str] = []
        while not banner or not banner[-1].startswith("Try: "):
            line = await asyncio.wait_for(serve.stdout.readline(), 90)
            assert line, f"serve ended: {banner}"
            banner.append(line.decode().rstrip("\n"))
        text = "\n".join(banner)
        command = banner[-1].removeprefix("Try: ").split("    (Ctrl-C stops)")[0]
        code, out, err = await _shell(command, tmp_path)
        assert code == 0, f"{command!r}: {err}"
        assert '"greeting": "Hello, world!"' in out

        hint = text.split("for curl: ", 1)[1].split(" and send ")[0]
        assert hint == "export HEDDLE_API_KEY=$(cat var/dev-api-key)"
        curl = (
            f'{hint} && curl -sf -H "Authorization: Bearer $HEDDLE_API_KEY" '
            f"http://127.0.0.1:{port}/api/v1/node-types"
        )
        code, out, err = await _shell(curl, tmp_path)
        assert code == 0, err
        assert '"type":"human_input"' in out.replace(" ", "")

        second = await asyncio.create_subprocess_exec(
            HEDDLE,
            "serve",
            "--free-ports",
            "--port",
            str(port),
            cwd=tmp_path,
            env=_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err_b = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 1
        assert err_b.decode() == f"error: port {port} is taken — is Heddle already running?\n"
    finally:
        serve.send_signal(signal.SIGINT)
        _, stopping = await asyncio.wait_for(serve.communicate(), 60)
    assert serve.returncode == 0, stopping.decode()
    assert "Traceback" not in stopping.decode()


def test_the_first_taken_port_is_named() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        assert taken_port({"ai": free_port(), "tool": taken, "log": free_port()}, "127.0.0.1") == (
            taken
        )
    assert taken_port({"ai": free_port()}, "127.0.0.1") is None


def test_cli_command_is_what_works_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PATH", BARE_PATH)
    assert cli_command() == ".venv/bin/heddle"  # make run: not on PATH, under the repo
    monkeypatch.setenv("PATH", f"{Path(HEDDLE).parent}:{BARE_PATH}")
    assert cli_command() == "heddle"
