"""heddle-sdk installs on its own: `pip install ./libs/sdk` into an empty virtual environment
resolves its few dependencies, builds, imports, and brings no server code with it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "libs" / "sdk"

PROBE = """
import importlib.metadata, importlib.util, json, re
import heddle_sdk
from heddle_sdk import AsyncClient, Client, Context, NodeError, Worker, Workflow, node_type
from heddle_sdk._proto.heddle.v1 import worker_pb2

@node_type("acme.probe")
def probe(text: str) -> str:
    return text

requires = importlib.metadata.requires("heddle-sdk") or []
print(json.dumps({
    "version": heddle_sdk.__version__,
    "importable": [m for m in ("services", "libs", "heddle", "fastapi", "sqlalchemy")
                   if importlib.util.find_spec(m) is not None],
    "requires": sorted(re.split(r"[<>=!~ ;]", r)[0] for r in requires if "extra ==" not in r),
    "extras": sorted(re.split(r"[<>=!~ ;]", r)[0] for r in requires if "extra ==" in r),
    "schema": probe.spec()["params_schema"]["required"],
    "message": worker_pb2.Register(worker_name="x").worker_name,
}))
"""


def test_pip_install_alone_builds_and_imports_without_server_code(tmp_path: Path) -> None:
    source = tmp_path / "sdk"
    shutil.copytree(
        SDK, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    # Run from an empty folder: nothing of this repository is on the path.
    probe = subprocess.run(
        [str(python), "-c", PROBE], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["version"] == "0.2.0"
    assert found["importable"] == []
    # sniffio: httpcore asks it for the running loop on every async request (8c5ea4c).
    # httpx-aiohttp: the client's transport, httpx's API on aiohttp's HTTP/1.1.
    assert found["requires"] == [
        "grpcio",
        "httpx",
        "httpx-aiohttp",
        "protobuf",
        "pydantic",
        "sniffio",
    ]
    assert found["extras"] == ["uvloop"]  # heddle-sdk[uvloop]: the worker's faster loop
    assert found["schema"] == ["text"]
    assert found["message"] == "x"
    assert (venv / "bin" / "heddle-worker").exists()
    usage = subprocess.run(
        [str(venv / "bin" / "heddle-worker"), "--help"], capture_output=True, text=True
    )
    assert usage.returncode == 0 and "--api-key" in usage.stdout
