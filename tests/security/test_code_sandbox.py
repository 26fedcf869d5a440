"""The code node's isolation (issue #12 item 1).

Two layers are tested apart. The first line, the runner's AST check and restricted
builtins, is driven through the code executor as a workflow would (and through the node
service's runner and the embedded stack): the known escapes and every attack below fail
with a clear error and the process running the executor stays healthy. The boundary, the
bubblewrap jail, is tested with a probe: unrestricted Python run by exactly the jail a code
node runs in (`jail_argv`), as if the first line had been escaped, which reports what it
could see and do; and from outside, the environment of a real code node's process is read.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from heddle.v1 import node_pb2

from libs.common import jsonutil
from services.node.attempts import NodeRunner
from services.node.executors import code
from services.node.executors.base import NodeError, NodeResult, NodeSettings, Services
from services.node.registry import default_registry
from tests.helpers import assert_eventually
from tests.integration.helpers import create_workflow, node, run, wait_final
from tests.node.conftest import make_request
from tests.node.fakes import FakeAi, FakeTools, FakeWorkflows

# Every attribute is read by a class pattern's keyword, none by `.`: before the fix this
# reached os.system through _wrap_close.__init__.__globals__.
MATCH_ESCAPE = """\
match ():
    case object(__class__=cls):
        pass
match cls:
    case object(__base__=base):
        pass
match base:
    case object(__subclasses__=subclasses):
        pass
for klass in subclasses():
    match klass:
        case object(__name__="_wrap_close", __init__=init):
            match init:
                case object(__globals__=found):
                    result = sorted(name for name in found if name == "system")
"""
FORMAT_ESCAPE = "result = '{0.__class__.__base__.__subclasses__}'.format(())"
SECRET_ENV = {
    "HEDDLE_SECRETS_KEY": "sandbox-test-secrets-key",
    "HEDDLE_BOOTSTRAP_API_KEY": "sandbox-test-bootstrap",
    "HEDDLE_DATABASE_URL": "postgresql://postgres:sandbox-test@127.0.0.1/test",
}


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """HEDDLE_ variables in this (the node service's) process, as a replica has them."""
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    return SECRET_ENV


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    async with httpx.AsyncClient() as client:
        yield Services(
            ai=FakeAi(),
            tools=FakeTools(),
            workflows=FakeWorkflows(),
            http=client,
            settings=NodeSettings(),
        )


async def run_code(services: Services, source: str, **params: Any) -> NodeResult:
    request = make_request("code", {"source": source, **params})
    return await default_registry().get("code").execute(request, services)


async def code_error(services: Services, source: str, **params: Any) -> NodeError:
    with pytest.raises(NodeError) as caught:
        await run_code(services, source, **params)
    assert not caught.value.retryable
    return caught.value


async def assert_still_healthy(services: Services) -> None:
    """The process that ran the failed code runs the next code node as usual."""
    result = await run_code(services, "result = sum(range(10))")
    assert result.output == {"result": 45}


# ------------------------------------------------------------------ through the executor


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (MATCH_ESCAPE, "'__class__' is not allowed (line 2)"),
        (FORMAT_ESCAPE, "AttributeError: attribute '__class__' is not allowed (line 1)"),
        # Built at run time, so that no check of the source can see the field name.
        (
            "field = '{0._' + '_class__}'\nresult = str.format(field, ())",
            "AttributeError: attribute '__class__' is not allowed (line 2)",
        ),
        (
            "import string\nresult = string.Formatter().format('{0.__class__}', ())",
            "AttributeError: attribute '__class__' is not allowed (line 2)",
        ),
        (
            "result = '{x.__class__}'.format_map({'x': 1})",
            "AttributeError: attribute '__class__' is not allowed (line 1)",
        ),
        (
            "match 'text':\n    case str(format=f):\n        result = f(())",
            "'format' is not allowed (line 2)",
        ),
    ],
)
async def test_the_known_escapes_fail(services: Services, source: str, message: str) -> None:
    error = await code_error(services, source)
    assert error.type == "CodeError"
    assert error.message == message
    await assert_still_healthy(services)


async def test_formatting_still_works(services: Services) -> None:
    source = (
        "import string\n"
        "result = ['{} {!r} {x:>3}'.format(1, 'a', x=2), '{a[0]}'.format_map({'a': [5]}),\n"
        "          str.format('{0.real}', 3), string.Formatter().format('{0.imag}', 4),\n"
        "          f'{inputs[\"n\"]:03d}']\n"
    )
    result = await run_code(services, source, inputs={"n": 7})
    assert result.output == {"result": ["1 'a'   2", "5", "3", "0", "007"]}


async def test_every_allowed_module_works_in_the_jail(services: Services) -> None:
    # Their extension modules and shared libraries (libcrypto, libuuid...) are bound in.
    source = (
        "import json, math, re, datetime, itertools, collections, functools, statistics\n"
        "import random, string, decimal, fractions, operator, textwrap, uuid, hashlib, base64\n"
        "result = [hashlib.sha256(b'x').hexdigest()[:8], uuid.uuid4().version,\n"
        "          str(decimal.Decimal(1) / 8), statistics.mean([1, 2, 3]),\n"
        "          base64.b64encode(b'hi').decode(), random.Random(1).randint(5, 5),\n"
        "          datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc).isoformat()]\n"
    )
    result = await run_code(services, source)
    assert result.output == {
        "result": ["2d711642", 4, "0.125", 2, "aGk=", 5, "2026-01-02T00:00:00+00:00"]
    }


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("result = open('/etc/passwd').read()", "NameError: name 'open' is not defined"),
        ("import os\nresult = open('/proc/1/environ').read()", "import of 'os' is not allowed"),
        ("import os\nos.system('id')", "import of 'os' is not allowed"),
        ("import subprocess\nsubprocess.run(['id'])", "import of 'subprocess' is not allowed"),
        ("import os\nwhile True:\n    os.fork()", "import of 'os' is not allowed"),
        ("import socket", "import of 'socket' is not allowed"),
        ("import uuid\nresult = uuid.os.getpid()", "AttributeError"),
        ("result = __import__('os')", "'__import__' is not allowed"),
    ],
)
async def test_attacks_are_refused(services: Services, source: str, message: str) -> None:
    error = await code_error(services, source)
    assert error.type == "CodeError"
    assert message in error.message
    await assert_still_healthy(services)


async def test_ten_gigabytes_hit_the_memory_limit(services: Services) -> None:
    error = await code_error(services, "blob = bytearray(10 * 2**30)\nresult = len(blob)")
    assert error.type == "CodeError"
    assert error.message == f"memory limit of {services.settings.code_memory_mb} MB exceeded"
    await assert_still_healthy(services)


async def test_an_infinite_loop_times_out(services: Services) -> None:
    error = await code_error(services, "while True:\n    pass\n", timeout_s=1)
    assert error.type == "Timeout"
    assert error.message == "code ran longer than 1s"
    await assert_still_healthy(services)


async def test_output_past_the_limit_is_refused(services: Services) -> None:
    services.settings = NodeSettings(code_max_output_bytes=64 * 1024)
    error = await code_error(services, "result = 'x' * 100_000")
    assert error.message == "result and output exceed 65536 bytes"
    await assert_still_healthy(services)


def parent_of(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])


def descends_from_this_process(pid: int) -> bool:
    while pid > 1:
        pid = parent_of(pid)
        if pid == os.getpid():
            return True
    return False


def sandbox_processes() -> list[int]:
    """Pids of this process's code runners' interpreters running now (seen from the host);
    not those of bwrap, setpriv or prlimit, whose command lines also name the runner, nor
    other test processes' on this machine."""
    python = code.jail_for(NodeSettings().code_bwrap_path).python.encode()
    runner = f"{code.SANDBOX_DIR}/{code.RUNNER.name}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ours = cmdline[0] == python and runner in cmdline
            if ours and descends_from_this_process(int(entry.name)):
                found.append(int(entry.name))
    return found


async def test_the_code_process_inherits_no_service_environment(
    services: Services, secret_env: dict[str, str]
) -> None:
    """Read from the host, while a code node runs: its process's uid, environment, root."""
    assert sandbox_processes() == []
    running = asyncio.ensure_future(run_code(services, "while True:\n    pass", timeout_s=20))
    try:
        await assert_eventually(lambda: sandbox_processes() != [], timeout=10)
        [pid] = sandbox_processes()
        status = Path(f"/proc/{pid}/status").read_text()  # noqa: ASYNC240 - /proc, no disk
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")  # noqa: ASYNC240
        names = {item.split(b"=", 1)[0].decode() for item in environ if item}
        pid_namespace = os.readlink(f"/proc/{pid}/ns/pid")
        net_namespace = os.readlink(f"/proc/{pid}/ns/net")
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert os.environ["HEDDLE_SECRETS_KEY"] == secret_env["HEDDLE_SECRETS_KEY"]
    assert not any(name.startswith("HEDDLE_") for name in names), names
    assert names <= {"LC_CTYPE", "PWD"}, names
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    # As root the jail drops to nobody; otherwise the uid is the service's (in a user ns).
    host_uid = code.SANDBOX_UID if os.geteuid() == 0 else os.geteuid()
    assert uid_line.split()[1:] == [str(host_uid)] * 4  # real, effective, saved, fs
    assert "CapEff:\t0000000000000000" in status
    assert pid_namespace != os.readlink("/proc/self/ns/pid")
    assert net_namespace != os.readlink("/proc/self/ns/net")
    await assert_eventually(lambda: sandbox_processes() == [], timeout=5)  # cancel killed it


async def test_without_bubblewrap_code_nodes_are_refused(services: Services) -> None:
    services.settings = NodeSettings(code_bwrap_path="/nonexistent/bwrap")
    error = await code_error(services, "result = 1")
    assert error.type == "SandboxUnavailable"
    assert "code nodes need bubblewrap" in error.message
    assert "bwrap not found at /nonexistent/bwrap" in error.message
    assert "HEDDLE_CODE_SANDBOX=unsafe-process" in error.message
    # Checked once per process: the verdict is cached.
    assert isinstance(code._jails["/nonexistent/bwrap"], code.SandboxUnavailableError)


async def test_the_unsafe_process_mode_is_an_explicit_opt_in(services: Services) -> None:
    services.settings = NodeSettings(
        code_bwrap_path="/nonexistent/bwrap", code_sandbox="unsafe-process"
    )
    result = await run_code(services, "print('ran')\nresult = 6 * 7")
    assert result.output == {"result": 42}
    error = await code_error(services, MATCH_ESCAPE)  # the first line still holds
    assert error.message == "'__class__' is not allowed (line 2)"


# ------------------------------------------------------ through the node service's runner


def code_task(node_id: str, source: str) -> node_pb2.NodeTask:
    return node_pb2.NodeTask(
        execution_id="e1",
        workflow_id="w1",
        node_id=node_id,
        node_type="code",
        attempt=1,
        idempotency_key=f"e1/{node_id}/1",
        params_json=jsonutil.dumps({"source": source}),
        context_json=jsonutil.dumps({"inputs": {}}),
        tenant_id="t1",
    )


async def test_the_node_runner_fails_escapes_and_keeps_running(services: Services) -> None:
    runner = NodeRunner(default_registry(), services)
    for node_id, source in [("match", MATCH_ESCAPE), ("format", FORMAT_ESCAPE)]:
        outcome = await runner.run(code_task(node_id, source))
        assert outcome.kind == node_pb2.NodeOutcome.FAILED
        assert outcome.error.type == "CodeError"
        assert "'__class__' is not allowed" in outcome.error.message
        assert not outcome.error.retryable
    outcome = await runner.run(code_task("fine", "result = 'still here'"))
    assert outcome.kind == node_pb2.NodeOutcome.SUCCEEDED
    assert jsonutil.loads(outcome.output_json) == {"result": "still here"}


async def test_a_workflow_with_the_escape_fails_and_the_replica_stays_healthy(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(
        client,
        {
            "name": "escape",
            "nodes": [{"id": "escape", "type": "code", "params": {"source": MATCH_ESCAPE}}],
        },
    )
    execution = await wait_final(client, await run(client, workflow_id, {}))
    assert execution["status"] == "failed"
    assert node(execution, "escape")["error"]["type"] == "CodeError"
    assert "'__class__' is not allowed" in node(execution, "escape")["error"]["message"]
    fine = await create_workflow(
        client,
        {
            "name": "fine",
            "nodes": [{"id": "add", "type": "code", "params": {"source": "result = 1 + 1"}}],
        },
    )
    execution = await wait_final(client, await run(client, fine, {}))
    assert execution["status"] == "succeeded", execution["error"]
    assert node(execution, "add")["output"] == {"result": 2}


# ------------------------------------------------------------------ the jail, by a probe

PROBE = r"""
import json, os, socket, subprocess, sys

def attempt(action):
    try:
        return {"ok": True, "value": action()}
    except BaseException as exc:
        return {"ok": False, "error": type(exc).__name__, "errno": getattr(exc, "errno", None)}

def read(path):
    with open(path, "rb") as file:
        return file.read().decode(errors="replace")

def write(path):
    with open(path, "w") as file:
        file.write("x")
    return path

def forks():
    made = 0
    for _ in range(50):
        try:
            pid = os.fork()
        except OSError:
            continue
        if pid == 0:
            os._exit(0)
        made += 1
        os.waitpid(pid, 0)
    return made

def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return "connected"

def allocate():
    return len(bytearray(10 * 2**30))

port, parent_pid, stdlib, project = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:5]
status = read("/proc/self/status")
print(json.dumps({
    "uid": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
    "groups": os.getgroups(),
    "caps": [line for line in status.splitlines() if line.startswith("Cap")],
    "no_new_privs": [line for line in status.splitlines() if line.startswith("NoNewPrivs")],
    "environ": dict(os.environ),
    "hostname": socket.gethostname(),
    "root": sorted(os.listdir("/")),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "etc_passwd": attempt(lambda: read("/etc/passwd")),
    "proc1_environ": attempt(lambda: read("/proc/1/environ")),
    "parent_environ": attempt(lambda: read(f"/proc/{parent_pid}/environ")),
    "project": attempt(lambda: os.listdir(project)),
    "var": attempt(lambda: os.listdir("/var")),
    "system": attempt(lambda: os.system("echo ran > /tmp/system.txt")),
    "spawn": attempt(lambda: os.posix_spawn(sys.executable, [sys.executable, "-V"], {})),
    "system_ran": os.path.exists("/tmp/system.txt"),
    "subprocess": attempt(lambda: subprocess.run([sys.executable, "-c", "1"]).returncode),
    "forks": attempt(forks),
    "socket": attempt(lambda: connect(port)),
    "write_root": attempt(lambda: write("/escape")),
    "write_program": attempt(lambda: write("/sandbox/escape")),
    "write_stdlib": attempt(lambda: write(os.path.join(stdlib, "escape.py"))),
    "write_proc": attempt(lambda: write("/proc/sys/kernel/hostname")),
    "write_scratch": attempt(lambda: write("/tmp/scratch.txt")),
    "allocate": attempt(allocate),
    "ctypes": attempt(lambda: __import__("ctypes") and "imported"),
}))
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A real listening TCP port on the host's 127.0.0.1."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    try:
        yield server
    finally:
        server.close()


async def probe(tmp_path: Path, settings: NodeSettings, listener: socket.socket) -> dict[str, Any]:
    """Run PROBE (unrestricted Python) in the jail of a code node; what it observed."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    jail = code.jail_for(settings.code_bwrap_path)
    stdlib = os.path.dirname(os.__file__)
    project = str(Path(code.__file__).parents[3])
    args = [str(script), str(listener.getsockname()[1]), str(os.getpid()), stdlib, project]
    argv = code.jail_argv(jail, settings, args, cpu_s=10, program=script)
    stdout, stderr, returncode = await code.run_process(
        argv, b"", 30, 1024 * 1024, cwd=str(tmp_path)
    )
    assert returncode == 0, stderr.decode()
    report: dict[str, Any] = json.loads(stdout)
    return report


def refused(observed: dict[str, Any], *errors: str) -> bool:
    return observed["ok"] is False and observed["error"] in errors


async def test_the_jail_contains_escaped_code(
    tmp_path: Path, listener: socket.socket, secret_env: dict[str, str]
) -> None:
    report = await probe(tmp_path, NodeSettings(), listener)
    # An unprivileged uid with no capability, and no environment of the service.
    assert report["uid"] == [code.SANDBOX_UID] * 4
    assert report["groups"] in ([], [code.SANDBOX_UID])
    assert len(report["caps"]) == 5  # inheritable, permitted, effective, bounding, ambient
    assert all(line.endswith("0000000000000000") for line in report["caps"]), report["caps"]
    assert report["no_new_privs"] == ["NoNewPrivs:\t1"]
    assert not [name for name in report["environ"] if name.startswith("HEDDLE_")]
    assert set(report["environ"]) <= {"LC_CTYPE", "PWD"}, report["environ"]
    assert not any(value in json.dumps(report) for value in secret_env.values())
    assert report["hostname"] == "heddle-code"
    # A filesystem of the interpreter, the stdlib and the program only.
    assert {"etc", "var", "work", "home", "opt"}.isdisjoint(report["root"]), report["root"]
    assert set(report["root"]) <= {"dev", "lib", "lib64", "proc", "root", "sandbox", "tmp", "usr"}
    assert refused(report["etc_passwd"], "FileNotFoundError")
    assert refused(report["project"], "FileNotFoundError")
    assert refused(report["var"], "FileNotFoundError")
    # Its own pid namespace: pid 1 is bwrap's init, the host's processes are not there.
    assert max(report["pids"]) < 10, report["pids"]
    assert refused(report["proc1_environ"], "PermissionError") or report["proc1_environ"] == {
        "ok": True,
        "value": "",
    }
    assert refused(report["parent_environ"], "FileNotFoundError")
    # No processes: no shell to run, no fork, no subprocess.
    assert report["system"]["ok"] is False or report["system"]["value"] != 0, report["system"]
    assert report["system_ran"] is False
    assert refused(report["spawn"], "BlockingIOError")  # the interpreter is there: no spawn
    assert refused(report["subprocess"], "BlockingIOError", "FileNotFoundError")
    assert report["forks"] == {"ok": True, "value": 0}
    # No network: 127.0.0.1 is the jail's own loopback; the host's listener sees nothing.
    assert refused(report["socket"], "ConnectionRefusedError", "OSError")
    with pytest.raises(BlockingIOError):
        listener.accept()
    # Read-only everywhere but the scratch tmpfs.
    for outside in ("write_root", "write_program", "write_stdlib"):
        assert report[outside] == {"ok": False, "error": "OSError", "errno": 30}, outside  # EROFS
    assert refused(report["write_proc"], "PermissionError", "OSError")
    assert report["write_scratch"] == {"ok": True, "value": "/tmp/scratch.txt"}
    assert refused(report["allocate"], "MemoryError")
    # No foreign-function calls (its libffi is not in the jail), so no raw syscalls from
    # Python 3.11 (unshare, mount): the kernel surface left is what the stdlib wraps.
    assert refused(report["ctypes"], "ImportError")


async def test_the_network_setting_shares_the_host_network(
    tmp_path: Path, listener: socket.socket
) -> None:
    # The same probe reaches the host's listener only when an operator allows it.
    report = await probe(tmp_path, NodeSettings(code_allow_network=True), listener)
    assert report["socket"] == {"ok": True, "value": "connected"}
    assert report["uid"] == [code.SANDBOX_UID] * 4
