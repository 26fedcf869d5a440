#!/usr/bin/env python3
"""Follow the README literally, as a newcomer on a fresh clone would.

Every command of the README's shell code blocks (```bash, ```sh, ```shell) runs in order in
a copy of the repository: `make run` starts the embedded stack in the background (on a free
HTTP port and free gRPC ports, through HEDDLE_HTTP_PORT and HEDDLE_FREE_PORTS, so it can run
beside another stack), then every later command runs in one bash session (so `source`,
`export` and `X=$(...)` carry over, as in a terminal) whose PATH does not hold .venv/bin, in
a new terminal. Each command must exit 0 and, where EXPECTED names it, print what it names.

Two adjustments, both mechanical: `localhost:8080` / `127.0.0.1:8080` in a command become the
check's port, and the `heddle` CLI is pointed there with HEDDLE_SERVER. The copy shares the
repository's .venv (a symlink) rather than installing a new one.

    .venv/bin/python scripts/readme_check.py        # prints each command and its outcome
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHELL_FENCES = ("bash", "sh", "shell")

#: Commands the check does not run, and why (each must still be in the README).
SKIPPED = {
    "make test": "it is the suite this check runs in",
    "HEDDLE_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/heddle": (
        "a lone workflow service that runs until stopped, on the fixed port 50051, against the "
        "shared PostgreSQL (tests/e2e start the services as processes)"
    ),
}

#: What a command must print, besides exiting 0: (a pattern found in the command, texts).
EXPECTED = [
    (r"^\.venv/bin/heddle run examples/hello\.yaml", ['"greeting": "Hello, world!"']),
    (r"^heddle executions list", ["hello v1", "succeeded"]),
    (r"/api/v1/node-types", ['"node_types"', '"type"']),  # issue #16 item 1: not a 401
    (r"^heddle run examples/hello\.yaml examples/branching\.yaml", ["Hello, Ada!"]),
    (r"^heddle input ", ["execution "]),
    (r"^heddle executions show ", ["approve", "human_input"]),
    (r"^heddle workflows list", ["approval", "branching", "hello"]),
    (r"^heddle validate ", ["examples/hello.yaml: valid", "examples/approval.yaml: valid"]),
    (r"knowledge-bases/\$KB/retrieve", ["platform 9", "travel.md"]),
]

STARTUP_TIMEOUT_S = 90.0


@dataclass
class Outcome:
    command: str
    code: int | None = None
    out: str = ""
    err: str = ""
    problems: list[str] = field(default_factory=list)
    skipped: str = ""


def shell_commands(readme: str) -> list[str]:
    """The commands of the shell code blocks, in order (continuation lines joined)."""
    commands: list[str] = []
    fence = re.compile(r"^```(\w*)\s*$")
    in_shell = in_block = False
    pending = ""
    for line in readme.splitlines():
        match = fence.match(line.strip())
        if match and not in_block:
            in_block, in_shell = True, match[1] in SHELL_FENCES
            continue
        if match and in_block:
            in_block = in_shell = False
            continue
        if not in_shell:
            continue
        text = pending + line.strip()
        if text.endswith("\\"):
            pending = text[:-1].rstrip() + " "
            continue
        pending = ""
        if text and not text.startswith("#"):
            commands.append(text)
    return commands


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _copy_repository(target: Path) -> None:
    """The working tree's files that git knows or would add (a clone of this tree)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        source = REPO / raw.decode()
        if not source.is_file():  # deleted in the working tree
            continue
        destination = target / raw.decode()
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    (target / ".venv").symlink_to(REPO / ".venv")
    # `make run` reinstalls when a pyproject.toml is newer than the venv's stamp; in the copy
    # that would point the shared editable installs at the copy. The venv is the repository's
    # (as fresh as `make test` keeps it), so no pyproject.toml of the copy looks newer.
    stamp = REPO / ".venv" / ".installed"
    if stamp.exists():
        for copied in target.rglob("pyproject.toml"):
            when = min(copied.stat().st_mtime, stamp.stat().st_mtime)
            os.utime(copied, (when, when))


def _environment(port: int) -> dict[str, str]:
    """A new terminal's environment: no HEDDLE_* settings, no .venv/bin on PATH."""
    venv_bin = str(REPO / ".venv" / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HEDDLE_", "VIRTUAL_ENV", "PYTHON")) and k != "NO_COLOR"
    }
    env["PATH"] = os.pathsep.join(
        part
        for part in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if part and Path(part).resolve() != Path(venv_bin).resolve()
    )
    env["HEDDLE_SERVER"] = f"http://127.0.0.1:{port}"
    return env


def _with_port(command: str, port: int) -> str:
    return re.sub(r"\b(localhost|127\.0\.0\.1):8080\b", rf"\1:{port}", command)


def _start_stack(copy: Path, port: int, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    # Never let `make run` in the copy (re)install into the shared venv: an editable install
    # made there would point at the copy, which is deleted afterwards.
    plan = subprocess.run(
        ["make", "-n", "run"], cwd=copy, env=env, capture_output=True, text=True, check=False
    ).stdout
    if "pip" in plan:
        raise RuntimeError(
            "`make run` would install into .venv first; run `make` (or `make test`) in the "
            f"repository once so that .venv is up to date:\n{plan}"
        )
    serve_env = {**env, "HEDDLE_HTTP_PORT": str(port), "HEDDLE_FREE_PORTS": "1"}
    serve_env.pop("HEDDLE_SERVER", None)
    process = subprocess.Popen(
        ["make", "run"],
        cwd=copy,
        env=serve_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C reaches make and heddle
    )
    assert process.stdout is not None
    banner: list[str] = []
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        banner.append(line)
        if line.startswith("Try: "):
            return process, "".join(banner)
    _stop(process)
    raise RuntimeError("`make run` did not print its banner:\n" + "".join(banner))


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        rest, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        rest, _ = process.communicate()
    return rest or ""


def _run_in_one_shell(
    commands: list[str], copy: Path, env: dict[str, str], logs: Path
) -> list[tuple[int, str, str]]:
    """Run commands in order in one bash session; each one's exit code, stdout, stderr."""
    lines = ["set +e"]
    for index, command in enumerate(commands):
        lines += [
            "{",
            command,
            f"}} >{logs}/{index}.out 2>{logs}/{index}.err </dev/null",
            f"echo $? >{logs}/{index}.rc",
        ]
    script = logs / "readme.sh"
    script.write_text("\n".join(lines) + "\n")
    subprocess.run(["bash", str(script)], cwd=copy, env=env, timeout=300, check=False)
    results = []
    for index in range(len(commands)):
        rc = logs / f"{index}.rc"
        code = int(rc.read_text()) if rc.exists() else -1
        results.append(
            (code, (logs / f"{index}.out").read_text(), (logs / f"{index}.err").read_text())
        )
    return results


def check(readme_path: Path = REPO / "README.md") -> list[Outcome]:
    """Every README command with what happened; a command with problems failed."""
    commands = shell_commands(readme_path.read_text())
    outcomes = [Outcome(command) for command in commands]
    for outcome in outcomes:
        for prefix, reason in SKIPPED.items():
            if outcome.command.startswith(prefix):
                outcome.skipped = reason
    first = outcomes[0] if outcomes else None
    if first is None or not first.command.startswith("make run"):
        raise RuntimeError("the README's first command should be `make run`")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="heddle-readme-") as tmp:
        copy = Path(tmp) / "heddle"
        logs = Path(tmp) / "logs"
        copy.mkdir()
        logs.mkdir()
        _copy_repository(copy)
        env = _environment(port)
        stack, banner = _start_stack(copy, port, env)
        first.code, first.out = 0, banner
        try:
            to_run = [o for o in outcomes[1:] if not o.skipped]
            results = _run_in_one_shell(
                [_with_port(o.command, port) for o in to_run], copy, env, logs
            )
        finally:
            stopped = _stop(stack)
        for outcome, (code, out, err) in zip(to_run, results, strict=True):
            outcome.code, outcome.out, outcome.err = code, out, err
            if code != 0:
                outcome.problems.append(f"exit code {code}")
            for pattern, wanted in EXPECTED:
                if re.search(pattern, outcome.command):
                    outcome.problems += [
                        f"no {text!r} in its output" for text in wanted if text not in out
                    ]
            if "Traceback" in out + err:
                outcome.problems.append("a traceback")
        if "Traceback" in stopped:
            first.problems.append("stopping `make run` printed a traceback:\n" + stopped)
    return outcomes


def main() -> int:
    outcomes = check()
    failed = 0
    for outcome in outcomes:
        if outcome.skipped:
            print(f"SKIP  {outcome.command}\n      ({outcome.skipped})")
            continue
        status = "FAIL" if outcome.problems else "ok  "
        print(f"{status}  {outcome.command}")
        if outcome.problems:
            failed += 1
            print("      " + "; ".join(outcome.problems))
            for stream in (outcome.out, outcome.err):
                for line in stream.strip().splitlines()[-10:]:
                    print(f"      | {line}")
    print(f"{len(outcomes)} commands, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
