"""The code node: user Python in a jail of the operating system (see _sandbox_runner.py).

Each run is a bubblewrap sandbox: new pid, ipc, uts, net, mount and (where possible) cgroup
namespaces; uid/gid 65534 (bwrap's user namespace, or, when the service is root, a setuid
by setpriv inside the jail); no environment; a filesystem of read-only binds of the Python
executable, its stdlib, the shared libraries they load and the runner script only, a fresh
/proc and a minimal /dev, and a small tmpfs /tmp as the one writable place; rlimits (CPU,
address space, processes, files, file size) applied by prlimit before Python starts.
Without bubblewrap code nodes are refused unless the operator opts in to the unsafe
process mode (settings: code_sandbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from libs.common.node_types import NodeTypeSpec
from services.node.executors.base import (
    Executor,
    NodeError,
    NodeRequest,
    NodeResult,
    NodeSettings,
    Services,
    object_schema,
)

RUNNER = Path(__file__).with_name("_sandbox_runner.py")
# -I: no env vars, no user site, script dir not on sys.path; -S: no site-packages;
# -B: no .pyc writes (RLIMIT_FSIZE is 0 anyway); utf8 mode since the env is empty.
INTERPRETER_FLAGS = ("-I", "-S", "-B", "-X", "utf8")
_STDERR_LIMIT = 64 * 1024
SANDBOX_UID = 65534  # nobody
SANDBOX_DIR = "/sandbox"  # where the program is bound inside the jail
# Files the runner may hold open: imports still need to open module files.
SANDBOX_NOFILE = 16
_SELF_CHECK = "import json, os; print(json.dumps([os.getuid(), os.getgid(), sorted(os.environ)]))"
# All the jail's environment holds: PWD (bwrap --chdir) and LC_CTYPE (PEP 538 coercion).
_PYTHON_OWN_ENV = {"LC_CTYPE", "PWD"}


class CodeExecutor(Executor):
    spec = NodeTypeSpec(
        type="code",
        title="Code",
        description="Runs Python in a sandbox. The code sees `inputs` and either sets "
        "`result = ...` or defines `def main(inputs): return ...`. Allowed imports: json, "
        "math, re, datetime, itertools, collections, functools, statistics, random, string, "
        "decimal, fractions, operator, textwrap, uuid, hashlib, base64.",
        category="core",
        params_schema=object_schema(
            {
                "language": {"type": "string", "enum": ["python"], "default": "python"},
                "source": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Python source; not templated (read values from `inputs`).",
                    "x-multiline": True,
                },
                "inputs": {
                    "description": "What the code sees as `inputs` (templated); by default the "
                    "whole context: inputs, system and every upstream node's output.",
                },
                "timeout_s": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "Wall-clock limit (capped by the service's limit).",
                },
            },
            required=["source"],
        ),
        output_schema=object_schema({"result": {}}, required=["result"]),
    )
    # Rendering the source would let upstream data inject code.
    raw_params = ("source",)

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        settings = services.settings
        await require_isolation(settings)
        limits = [settings.code_timeout_s, params.get("timeout_s"), request.timeout_s]
        timeout = min(t for t in limits if t is not None)
        code_inputs = params.get("inputs", request.context)
        report = await run_sandboxed(params["source"], code_inputs, settings, timeout)
        logs = [
            {"level": "info", "message": line, "stream": "stdout"}
            for line in report.get("stdout", "").splitlines()
        ]
        if not report.get("ok"):
            raise _code_error(report.get("error") or {}, logs)
        return NodeResult(output={"result": report.get("result")}, logs=logs)


def _code_error(error: dict[str, Any], logs: list[dict[str, Any]]) -> NodeError:
    message = str(error.get("message") or "code failed")
    if error.get("line"):
        message = f"{message} (line {error['line']})"
    details = {"error_type": error.get("type"), "line": error.get("line"), "logs": logs}
    return NodeError("CodeError", message, retryable=False, details=details, logs=logs)


def _kill_group(process: asyncio.subprocess.Process) -> None:
    # start_new_session made the child a group leader: this also reaches anything it spawned.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def _read_bounded(
    stream: asyncio.StreamReader | None, limit: int, process: asyncio.subprocess.Process
) -> bytes | None:
    """The whole stream, or None if it exceeded limit (the process is then killed)."""
    if stream is None:
        return b""
    data = bytearray()
    overflow = False
    while chunk := await stream.read(64 * 1024):
        if overflow:
            continue  # drain to EOF so the pipe transport can close
        data += chunk
        if len(data) > limit:
            overflow = True
            _kill_group(process)
    return None if overflow else bytes(data)


async def _feed(stream: asyncio.StreamWriter | None, payload: bytes) -> None:
    if stream is None:
        return
    # The child may die (limits) before it read everything; its exit status tells why.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stream.write(payload)
        await stream.drain()
        stream.close()


# ------------------------------------------------------------------------------ the jail


@dataclass(frozen=True)
class Jail:
    """What every bubblewrap run of this process binds and executes (found once)."""

    bwrap: str
    python: str  # the real interpreter (not a venv's symlink)
    ro_binds: tuple[tuple[str, str], ...]  # (host path, path in the jail)
    hidden: tuple[str, ...]  # directories of the binds covered by an empty tmpfs
    prlimit: str
    setpriv: str | None  # set when the service is root: the uid drop happens inside


class SandboxUnavailableError(Exception):
    """bubblewrap cannot isolate code here; the message says why."""


def _which(name: str) -> str:
    found = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if found is None:
        raise SandboxUnavailableError(f"{name} (util-linux) is missing")
    return os.path.realpath(found)


def _shared_libraries(binaries: Sequence[str]) -> set[str]:
    """The shared libraries (and ELF interpreter) that ``binaries`` load, from ldd."""
    done = subprocess.run(
        [_which("ldd"), *binaries], capture_output=True, text=True, env={}, check=False
    )
    libraries = set()
    for line in done.stdout.splitlines():
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)", line)
        if match:
            libraries.add(match.group(1))
    if not libraries:
        raise SandboxUnavailableError(f"ldd found no libraries: {done.stderr.strip()[:200]}")
    return libraries


def discover_jail(bwrap: str) -> Jail:
    """Find what the jail needs and prove it works (a real run); raise with the reason."""
    if not (os.path.isfile(bwrap) and os.access(bwrap, os.X_OK)):
        raise SandboxUnavailableError(f"bwrap not found at {bwrap}")
    python = os.path.realpath(sys.executable)
    stdlib = os.path.realpath(os.path.dirname(os.__file__))
    listed = subprocess.run(
        [python, *INTERPRETER_FLAGS, str(RUNNER), "--extensions"],
        capture_output=True,
        text=True,
        env={},
        check=False,
    )
    if listed.returncode != 0:
        raise SandboxUnavailableError(f"the runner failed: {listed.stderr.strip()[:200]}")
    extensions = [os.path.realpath(path) for path in json.loads(listed.stdout)]
    root = os.geteuid() == 0
    setpriv = _which("setpriv") if root else None
    prlimit = _which("prlimit")
    binaries = [python, prlimit, *extensions, *([setpriv] if setpriv else [])]
    binds = {(python, python), (stdlib, stdlib), (prlimit, prlimit)}
    if setpriv:
        binds.add((setpriv, setpriv))
    binds |= {(os.path.realpath(lib), lib) for lib in _shared_libraries(binaries)}
    # The base install's third-party packages are no business of user code.
    hidden = tuple(p for p in [os.path.join(stdlib, "site-packages")] if os.path.isdir(p))
    ordered = tuple(sorted(binds, key=lambda bind: bind[1]))  # a parent before what it holds
    jail = Jail(bwrap, python, ordered, hidden, prlimit, setpriv)
    argv = jail_argv(jail, NodeSettings(), ["-c", _SELF_CHECK], cpu_s=5)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env={}, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        raise SandboxUnavailableError("its self-check timed out") from None
    try:
        uid, gid, environ = json.loads(done.stdout) if done.returncode == 0 else (0, 0, [])
    except ValueError:
        uid = gid = 0
        environ = []
    if (uid, gid) != (SANDBOX_UID, SANDBOX_UID) or not set(environ) <= _PYTHON_OWN_ENV:
        detail = (done.stderr.strip() or done.stdout.strip())[-300:]
        raise SandboxUnavailableError(f"its self-check failed ({done.returncode}): {detail}")
    return jail


def jail_argv(
    jail: Jail,
    settings: NodeSettings,
    python_args: Sequence[str],
    *,
    cpu_s: int,
    program: Path | None = None,
) -> list[str]:
    """The command that runs ``python <python_args>`` in the jail; ``program`` (a script
    among python_args, by its host path) is bound read-only under /sandbox."""
    argv = [jail.bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-uts"]
    argv += ["--unshare-cgroup-try", "--hostname", "heddle-code"]
    if not settings.code_allow_network:
        argv.append("--unshare-net")
    argv += ["--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL"]
    if jail.setpriv:
        # bwrap as root creates the namespaces; setpriv then becomes nobody for good.
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    else:
        argv += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        argv.append("--disable-userns")
    # bwrap as root would create the binds' parent directories as 0700, closed to nobody.
    parents = {str(parent) for _, target in jail.ro_binds for parent in Path(target).parents}
    for parent in sorted(parents - {"/"}):
        argv += ["--perms", "0755", "--dir", parent]
    for source, target in jail.ro_binds:
        argv += ["--ro-bind", source, target]
    for hidden in jail.hidden:
        argv += ["--tmpfs", hidden, "--remount-ro", hidden]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(settings.code_scratch_mb * 1024 * 1024)]
    argv += ["--tmpfs", "/tmp", "--chdir", "/tmp"]
    args = list(python_args)
    if program is not None:
        inside = f"{SANDBOX_DIR}/{program.name}"
        argv += ["--perms", "0755", "--dir", SANDBOX_DIR, "--ro-bind", str(program), inside]
        args = [inside if arg == str(program) else arg for arg in args]
    argv += ["--remount-ro", "/"]  # the jail's own root too: /tmp is the one writable place
    argv.append("--")
    if jail.setpriv:
        uid = str(SANDBOX_UID)
        argv += [jail.setpriv, "--inh-caps=-all", "--bounding-set=-all"]
        argv += ["--reuid", uid, "--regid", uid, "--clear-groups", "--"]
    memory = settings.code_memory_mb * 1024 * 1024
    scratch = settings.code_scratch_mb * 1024 * 1024
    argv += [
        jail.prlimit,
        f"--cpu={cpu_s}:{cpu_s + 1}",
        f"--as={memory}:{memory}",
        "--nproc=0:0",  # binds: the code is not root
        f"--nofile={SANDBOX_NOFILE}:{SANDBOX_NOFILE}",
        f"--fsize={scratch}:{scratch}",
        "--core=0:0",
        "--",
        jail.python,
        *INTERPRETER_FLAGS,
        *args,
    ]
    return argv


_jails: dict[str, Jail | SandboxUnavailableError] = {}
_jails_lock = threading.Lock()


def jail_for(bwrap: str) -> Jail:
    """The jail of this process, checked once (per bwrap path) and cached."""
    with _jails_lock:
        if bwrap not in _jails:
            try:
                _jails[bwrap] = discover_jail(bwrap)
            except (SandboxUnavailableError, OSError, ValueError) as exc:
                _jails[bwrap] = SandboxUnavailableError(str(exc))
        found = _jails[bwrap]
    if isinstance(found, SandboxUnavailableError):
        raise found
    return found


async def require_isolation(settings: NodeSettings) -> Jail | None:
    """The jail code runs in, None in the opted-in unsafe mode; else a non-retryable error."""
    if settings.code_sandbox == "unsafe-process":
        return None
    try:
        if settings.code_bwrap_path in _jails:  # checked already: no thread hop
            return jail_for(settings.code_bwrap_path)
        return await asyncio.to_thread(jail_for, settings.code_bwrap_path)
    except SandboxUnavailableError as exc:
        raise NodeError(
            "SandboxUnavailable",
            f"code nodes need bubblewrap to isolate them and it is unavailable here ({exc}); "
            "install it (Debian package bubblewrap) or set HEDDLE_CODE_SANDBOX=unsafe-process "
            "to opt in to running code without isolation",
            retryable=False,
        ) from None


# ------------------------------------------------------------------------------ a run


async def run_sandboxed(
    source: str, inputs: Any, settings: NodeSettings, timeout_s: float
) -> dict[str, Any]:
    """Run ``source`` in the sandbox and return the runner's report (see _sandbox_runner)."""
    payload = json.dumps({"source": source, "inputs": inputs}, default=str).encode()
    cpu_s = max(1, math.ceil(timeout_s))
    args = [str(RUNNER), str(cpu_s), str(settings.code_memory_mb)]
    args.append(str(settings.code_max_log_chars))
    jail = await require_isolation(settings)
    with tempfile.TemporaryDirectory(prefix="heddle-code-") as workdir:
        if jail is None:
            argv = [sys.executable, *INTERPRETER_FLAGS, *args]
        else:
            argv = jail_argv(jail, settings, args, cpu_s=cpu_s, program=RUNNER)
        stdout, stderr, returncode = await run_process(
            argv, payload, timeout_s, settings.code_max_output_bytes, cwd=workdir
        )
    return _parse_report(stdout, stderr, returncode, settings)


async def run_process(
    argv: Sequence[str], payload: bytes, timeout_s: float, max_output: int, cwd: str
) -> tuple[bytes, bytes, int]:
    """Run argv with payload on stdin; its bounded stdout, stderr and exit status."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env={},
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout_s):
            _, stdout, stderr = await asyncio.gather(
                _feed(process.stdin, payload),
                _read_bounded(process.stdout, max_output, process),
                _read_bounded(process.stderr, _STDERR_LIMIT, process),
            )
            if stdout is None:
                raise NodeError(
                    "CodeError", f"result and output exceed {max_output} bytes", retryable=False
                )
            returncode = await process.wait()
    except TimeoutError:
        raise NodeError(
            "Timeout", f"code ran longer than {timeout_s:g}s", retryable=False
        ) from None
    finally:
        # Also on cancellation (node cancelled, deadline hit): never leave it running. In the
        # jail, killing bwrap kills its pid namespace's init and so everything in it.
        if process.returncode is None:
            _kill_group(process)
            await process.wait()
    return stdout, stderr or b"", returncode


def _parse_report(
    stdout: bytes, stderr: bytes, returncode: int, settings: NodeSettings
) -> dict[str, Any]:
    if returncode == 0:
        try:
            report = json.loads(stdout)
        except ValueError:
            report = None
        if isinstance(report, dict):
            return report
    # bwrap reports a child killed by signal N as exit status 128 + N.
    signals = {-returncode if returncode < 0 else returncode - 128}
    if signals & {signal.SIGXCPU, signal.SIGKILL}:
        raise NodeError("Timeout", "code exceeded its CPU time limit", retryable=False)
    tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
    if "MemoryError" in tail[0] or signals & {signal.SIGSEGV, signal.SIGABRT}:
        message = f"memory limit of {settings.code_memory_mb} MB exceeded"
    else:
        message = f"sandbox exited with status {returncode}: {tail[0]}".rstrip(": ")
    return {"ok": False, "error": {"type": "SandboxError", "message": message}}
