"""The code node: user Python in a resource-limited subprocess (see _sandbox_runner.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import tempfile
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


async def run_sandboxed(
    source: str, inputs: Any, settings: NodeSettings, timeout_s: float
) -> dict[str, Any]:
    """Run ``source`` in the sandbox and return the runner's report (see _sandbox_runner)."""
    payload = json.dumps({"source": source, "inputs": inputs}, default=str).encode()
    cpu_s = max(1, math.ceil(timeout_s))
    with tempfile.TemporaryDirectory(prefix="heddle-code-") as workdir:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *INTERPRETER_FLAGS,
            str(RUNNER),
            str(cpu_s),
            str(settings.code_memory_mb),
            str(settings.code_max_log_chars),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir,
            env={},
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(timeout_s):
                _, stdout, stderr = await asyncio.gather(
                    _feed(process.stdin, payload),
                    _read_bounded(process.stdout, settings.code_max_output_bytes, process),
                    _read_bounded(process.stderr, _STDERR_LIMIT, process),
                )
                if stdout is None:
                    raise NodeError(
                        "CodeError",
                        f"result and output exceed {settings.code_max_output_bytes} bytes",
                        retryable=False,
                    )
                returncode = await process.wait()
        except TimeoutError:
            raise NodeError(
                "Timeout", f"code ran longer than {timeout_s:g}s", retryable=False
            ) from None
        finally:
            # Also on cancellation (node cancelled, deadline hit): never leave it running.
            if process.returncode is None:
                _kill_group(process)
                await process.wait()
    return _parse_report(stdout, stderr or b"", returncode, settings)


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
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise NodeError("Timeout", "code exceeded its CPU time limit", retryable=False)
    tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
    if "MemoryError" in tail[0] or returncode in (-signal.SIGSEGV, -signal.SIGABRT):
        message = f"memory limit of {settings.code_memory_mb} MB exceeded"
    else:
        message = f"sandbox exited with status {returncode}: {tail[0]}".rstrip(": ")
    return {"ok": False, "error": {"type": "SandboxError", "message": message}}
