"""The `heddle` commands against the embedded stack, with output piped (as scripts run it)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path

import httpx
import pytest

from libs.cli.stack import Stack
from tests.cli.conftest import EXAMPLES, HEDDLE, REPO, ask_workflow, cli_env, heddle
from tests.helpers import assert_eventually

HELLO = str(EXAMPLES / "hello.yaml")


async def _versions(server: str, name: str) -> int:
    listing = json.loads((await heddle(server, "workflows", "list", "--json")).out)
    return next(w["version"] for w in listing if w["name"] == name)


async def test_no_key_needed_on_loopback_and_errors_are_one_line(server: str) -> None:
    """Item 1/7: right after the stack starts, `heddle` works with no key (it takes the
    development key offered to loopback callers); an API error is one line with its code."""
    listed = await heddle(server, "workflows", "list", "--json")
    assert listed.code == 0, listed.err
    assert json.loads(listed.out) == []
    missing = await heddle(server, "executions", "show", "6a1c3f0e-0000-4000-8000-000000000000")
    assert missing.code == 1
    assert re.fullmatch(r"error: not_found: .+\n", missing.err), missing.err
    refused = await heddle(server, "workflows", "list", HEDDLE_API_KEY="hk_wrong_key")
    assert refused.code == 1
    assert refused.err.startswith("error: unauthenticated: ") and "Traceback" not in refused.err


async def test_an_unchanged_file_saves_no_new_version(server: str, tmp_path: Path) -> None:
    """Item 3: the server's normalised definition is compared with the file's, normalised
    the same way (the examples: defaults, edges, conditions, merges, human input, outputs)."""
    inputs = ["-i", "name=x", "-i", "amount=1", "-i", "text=x"]
    for name in ("hello", "branching", "summarize", "approval"):  # conditions, merges, llm...
        example = EXAMPLES / f"{name}.yaml"
        definition = example.read_text()
        copy = tmp_path / example.name
        copy.write_text(definition)
        first = await heddle(server, "run", str(copy), "--no-wait", *inputs)
        assert first.code == 0, first.err
        second = await heddle(server, "run", str(copy), "--no-wait", *inputs)
        assert second.code == 0, second.err
        assert await _versions(server, name) == 1, f"{example.name} saved a second version"
    changed = tmp_path / "hello.yaml"
    changed.write_text(changed.read_text().replace("Greets someone", "Greets anyone"))
    ran = await heddle(server, "run", str(changed), "-i", "name=x")
    assert ran.code == 0, ran.err
    assert ran.out.startswith("hello v2  execution ")
    assert await _versions(server, "hello") == 2


async def test_several_files_and_typed_inputs(server: str, tmp_path: Path) -> None:
    """Item 5: several files at once; --input typed by the declared inputs."""
    both = await heddle(
        server,
        "run",
        HELLO,
        str(EXAMPLES / "branching.yaml"),
        "-i",
        "name=123",
        "-i",
        "amount=250",
        "--json",
    )
    assert both.code == 0, both.err
    hello, branching = json.loads(both.out)
    assert hello["outputs"] == {"greeting": "Hello, 123!"}  # a declared string stays a string
    assert hello["inputs"]["name"] == "123"
    assert branching["status"] == "succeeded"
    assert branching["inputs"]["amount"] == 250  # a declared number is parsed

    wrong = await heddle(server, "run", str(EXAMPLES / "branching.yaml"), "-i", "amount=lots")
    assert wrong.code == 1
    assert wrong.err == "error: --input amount: expected a number, got 'lots'\n"

    missing = await heddle(server, "run", str(EXAMPLES / "branching.yaml"))
    assert missing.code == 1
    assert "[]" not in missing.err
    assert missing.err.splitlines() == [
        "error: invalid_argument: inputs do not match the workflow's inputs",
        "  inputs.amount: required input missing",
    ]

    flags = tmp_path / "flags.yaml"
    flags.write_text(
        "name: flags\ninputs:\n  flag: {type: boolean}\n  n: {type: integer}\n"
        "  tags: {type: array}\n  text: {type: string}\n"
        "nodes:\n  - {id: start, type: input}\n"
        "outputs:\n  got: '{{ inputs }}'\n"
    )
    typed = await heddle(
        server,
        "run",
        str(flags),
        "-i",
        "flag=yes",
        "-i",
        "n=7",
        "-i",
        'tags=["a"]',
        "-i",
        "text=true",
        "--json",
    )
    assert typed.code == 0, typed.err
    assert json.loads(typed.out)["inputs"] == {"flag": True, "n": 7, "tags": ["a"], "text": "true"}
    bad = await heddle(server, "run", str(flags), "-i", "n=7.5")
    assert bad.err == "error: --input n: expected an integer, got '7.5'\n"


async def test_waiting_input_off_a_terminal_prints_the_command_to_answer(
    server: str, tmp_path: Path
) -> None:
    """Item 6: off a terminal, a waiting human_input node makes `run` print the `heddle
    input` command that answers it; running that command (typed by the node's schema) lets
    the run finish."""
    process = await asyncio.create_subprocess_exec(
        HEDDLE,
        "run",
        str(ask_workflow(tmp_path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=cli_env(server),
    )
    assert process.stdout is not None
    hint = ""
    while "answer with:" not in hint:
        hint = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert hint, "run ended without asking for input"
    command = hint.split("answer with:", 1)[1].strip()
    assert shlex.split(command)[1] == "input"
    answer = await asyncio.create_subprocess_shell(  # run literally, as printed
        command,
        cwd=REPO,
        env=cli_env(server),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, answer_err = await answer.communicate()
    assert answer.returncode == 0, answer_err.decode()
    rest, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert '"approved": true' in rest.decode() and '"count": 1' in rest.decode()


async def test_execution_commands(server: str, stack: Stack, tmp_path: Path) -> None:
    """Item 7: executions list/show, logs, pause/resume/cancel, input, retry, workflows
    show/delete, each with --json for scripts."""
    ask = ask_workflow(tmp_path)
    started = await heddle(server, "run", str(ask), "--no-wait", "--json")
    assert started.code == 0, started.err
    execution_id = json.loads(started.out)["execution_id"]

    async def node_waits() -> bool:
        shown = await heddle(server, "executions", "show", execution_id, "--json")
        nodes = {n["node_id"]: n["status"] for n in json.loads(shown.out)["nodes"]}
        return nodes.get("approve") == "waiting"

    await assert_eventually(node_waits, timeout=20)
    listed = json.loads((await heddle(server, "executions", "list", "--json")).out)
    assert [e["id"] for e in listed] == [execution_id]
    table = await heddle(server, "executions", "list", "--workflow", "ask")
    assert execution_id in table.out and "ask v1" in table.out

    paused = await heddle(server, "pause", execution_id, "--json")
    assert paused.code == 0, paused.err
    assert json.loads(paused.out)["status"] == "paused"
    resumed = await heddle(server, "resume", execution_id, "--json")
    assert json.loads(resumed.out)["status"] != "paused"

    refused = await heddle(server, "input", execution_id, "approve", "--data", "approved=true")
    assert refused.code == 1
    assert refused.err.startswith("error: invalid_argument: ")
    assert "'count' is a required property" in refused.err
    following = asyncio.ensure_future(heddle(server, "logs", execution_id, "--follow"))
    answered = await heddle(
        server, "input", execution_id, "approve", "-d", '{"approved": false, "count": 2}'
    )
    assert answered.code == 0, answered.err
    followed_to_the_end = await asyncio.wait_for(following, 30)  # ends with the execution
    assert followed_to_the_end.code == 0, followed_to_the_end.err

    async def succeeded() -> bool:
        shown = await heddle(server, "executions", "show", execution_id, "--json")
        return bool(json.loads(shown.out)["status"] == "succeeded")

    await assert_eventually(succeeded, timeout=20)
    shown = await heddle(server, "executions", "show", execution_id)
    assert "approve" in shown.out and "human_input" in shown.out and "succeeded" in shown.out

    logs = await heddle(server, "logs", execution_id, "--json")
    assert logs.code == 0, logs.err
    assert all(json.loads(line)["level"] for line in logs.out.splitlines())
    followed = await heddle(server, "logs", execution_id, "--follow", "--level", "ERROR")
    assert followed.code == 0, followed.err  # an ended execution: --follow returns at once

    second = json.loads((await heddle(server, "run", str(ask), "--no-wait", "--json")).out)
    cancelled = await heddle(server, "cancel", second["execution_id"], "--json")
    assert cancelled.code == 0, cancelled.err
    assert json.loads(cancelled.out)["status"] == "cancelled"

    failing = tmp_path / "failing.yaml"
    failing.write_text(
        "name: failing\nnodes:\n  - id: boom\n    type: http_request\n"
        "    params: {url: 'http://169.254.169.254/'}\n"  # a blocked address: fails at once
    )
    failed = await heddle(server, "run", str(failing))
    assert failed.code == 1
    failed_id = failed.out.split("execution ", 1)[1].split()[0]
    retried = await heddle(server, "retry", failed_id)
    assert retried.code == 0, retried.err
    assert re.fullmatch(r"[0-9a-f-]{36}\n", retried.out)

    definition = await heddle(server, "workflows", "show", "ask")
    assert definition.out.startswith("# ask v1  id ") and "human_input" in definition.out
    deleted = await heddle(server, "workflows", "delete", "failing", "--yes")
    assert deleted.code == 0, deleted.err
    names = [
        w["name"] for w in json.loads((await heddle(server, "workflows", "list", "--json")).out)
    ]
    assert sorted(names) == ["ask"]


async def test_schedules_keys_and_secrets(server: str) -> None:
    """Item 7: schedules list/create/delete, keys list/create/revoke, secrets list/set/delete."""
    assert (await heddle(server, "run", HELLO, "-i", "name=x")).code == 0
    created = await heddle(
        server,
        "schedules",
        "create",
        "hello",
        "--cron",
        "0 9 * * 1",
        "-i",
        "name=7",
        "--name",
        "weekly",
        "--json",
    )
    assert created.code == 0, created.err
    schedule = json.loads(created.out)
    assert schedule["inputs"] == {"name": "7"} and schedule["cron"] == "0 9 * * 1"
    listed = await heddle(server, "schedules", "list", "--workflow", "hello")
    assert schedule["id"] in listed.out and "weekly" in listed.out
    assert (await heddle(server, "schedules", "delete", schedule["id"])).code == 0
    assert json.loads((await heddle(server, "schedules", "list", "--json")).out) == []

    made = await heddle(server, "keys", "create", "--name", "ci", "--scope", "read", "--json")
    assert made.code == 0, made.err
    key = json.loads(made.out)
    async with httpx.AsyncClient(base_url=server) as http:
        ok = await http.get("/api/v1/workflows", headers={"authorization": f"Bearer {key['key']}"})
        assert ok.status_code == 200
    keys = await heddle(server, "keys", "list")
    assert key["id"] in keys.out and "ci" in keys.out
    assert (await heddle(server, "keys", "revoke", key["id"])).code == 0
    with_revoked = await heddle(server, "workflows", "list", HEDDLE_API_KEY=key["key"])
    assert with_revoked.code == 1 and with_revoked.err.startswith("error: unauthenticated: ")

    assert (await heddle(server, "secrets", "set", "TOKEN", stdin="s3cret\n")).code == 0
    secrets = json.loads((await heddle(server, "secrets", "list", "--json")).out)
    assert [s["name"] for s in secrets] == ["TOKEN"]
    assert "s3cret" not in (await heddle(server, "secrets", "list")).out
    assert (await heddle(server, "secrets", "delete", "TOKEN")).code == 0
    assert json.loads((await heddle(server, "secrets", "list", "--json")).out) == []


async def test_output_into_a_closed_pipe_ends_quietly(server: str) -> None:
    """Item 7: `heddle run ... | head -1` prints one line and no BrokenPipeError."""
    process = await asyncio.create_subprocess_shell(
        f"{shlex.quote(HEDDLE)} run {shlex.quote(HELLO)} -i name=x | head -1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(server),
    )
    out, err = await process.communicate()
    assert out.decode().startswith("hello v1  execution ")
    assert err.decode() == ""
    listing = await heddle(server, "workflows", "list")
    lines = listing.out.splitlines()
    shell = await asyncio.create_subprocess_shell(
        f"{shlex.quote(HEDDLE)} executions list | head -1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(server),
    )
    head, err = await shell.communicate()
    assert head.decode().split() == ["ID", "WORKFLOW", "STATUS", "CREATED", "DURATION"]
    assert err.decode() == "" and lines[0].split()[0] == "NAME"


async def test_piped_output_has_no_escapes_and_completion_prints_a_script(server: str) -> None:
    """Colour only on a terminal; `--show-completion` prints the shell's completion script."""
    ran = await heddle(server, "run", HELLO, "-i", "name=x")
    assert ran.code == 0 and "\x1b" not in ran.out + ran.err
    listed = await heddle(server, "executions", "list")
    assert "\x1b" not in listed.out
    # The shell named: Typer would otherwise detect it from the parent processes, which
    # depend on how the suite was started (bash -c may exec the command in its place).
    shown = await heddle(server, "--show-completion", "bash")
    assert shown.code == 0, shown.err
    script = shown.out
    assert "_HEDDLE_COMPLETE=complete_bash" in script
    assert "complete -o default -F _heddle_completion heddle" in script
    # What the script asks the command for, when Tab is pressed after `heddle executions `:
    words = await heddle(
        server, _HEDDLE_COMPLETE="complete_bash", COMP_WORDS="heddle executions ", COMP_CWORD="2"
    )
    assert words.out.split() == ["list", "show"]


@pytest.mark.parametrize("stack", [{"code_sandbox": "unsafe-process"}], indirect=True)
async def test_logs_print_what_nodes_logged(server: str, tmp_path: Path) -> None:
    """`heddle logs` shows a code node's prints as they are (brackets are not markup), filters
    by node, and --json gives one record a line."""
    printing = tmp_path / "printing.yaml"
    printing.write_text(
        "name: printing\nnodes:\n  - id: talk\n    type: code\n"
        "    params: {source: \"print('step [1/2] [bold]done')\\nresult = 1\"}\n"
    )
    ran = await heddle(server, "run", str(printing), "--json")
    assert ran.code == 0, ran.err
    execution_id = json.loads(ran.out)["id"]

    async def logged() -> bool:
        return "talk" in (await heddle(server, "logs", execution_id, "--node", "talk")).out

    await assert_eventually(logged, timeout=20)
    shown = await heddle(server, "logs", execution_id, "--node", "talk")
    assert "step [1/2] [bold]done" in shown.out, shown.out
    records = [
        json.loads(line)
        for line in (await heddle(server, "logs", execution_id, "--json")).out.splitlines()
    ]
    assert any(r["message"] == "step [1/2] [bold]done" and r["node_id"] == "talk" for r in records)


async def test_the_key_heddle_up_leaves_in_var_is_used(
    server: str, stack: Stack, tmp_path: Path
) -> None:
    """A gateway that offers no development key (the production topology of `heddle up`):
    the CLI sends the admin key `heddle up` keeps in var/dev-api-key."""
    stack.services["gateway"].app.state.console_dev_key = None
    refused = await heddle(server, "workflows", "list", cwd=tmp_path)
    assert refused.code == 1 and refused.err.startswith("error: unauthenticated: ")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev-api-key").write_text(stack.admin_key + "\n")
    listed = await heddle(server, "workflows", "list", "--json", cwd=tmp_path)
    assert listed.code == 0, listed.err
