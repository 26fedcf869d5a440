"""Architecture checks anyone can run: the import-linter contracts in pyproject.toml
(services never import each other, libs/common never imports a service, no import cycle in
services/workflow or libs/common, the execution core imports no I/O library), and every
module of services/ and libs/common importing on its own in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The parent imports every third-party module ours import (never one of ours), then forks a
# child per module of ours: each child starts from an interpreter with none of our modules
# loaded, so an import cycle or a missing import shows; loading the libraries once keeps it
# fast.
_ISOLATED_IMPORTS = textwrap.dedent(
    """
    import ast, importlib, os, pathlib, sys, traceback
    ours = ("services", "libs")
    modules = sys.argv[1:]
    # Every third-party (and generated heddle.v1) module our modules import at the top level.
    preload = set()
    for name in modules:
        parts = name.split(".")
        path = pathlib.Path(*parts)
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                preload.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                preload.add(node.module)
    for module in sorted(preload):
        if module.split(".")[0] in ours:
            continue
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    project = [m for m in sys.modules if m.split(".")[0] in ours]
    assert not project, project  # nothing of ours is loaded before a child imports it
    failed = []
    parallel = 2
    running = {}
    def reap(block):
        pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid:
            name = running.pop(pid)
            if status != 0:
                failed.append(name)
        return pid
    for name in modules:
        while len(running) >= parallel:
            reap(True)
        pid = os.fork()
        if pid == 0:
            try:
                importlib.import_module(name)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        running[pid] = name
    while running:
        reap(True)
    print("FAILED:" + ",".join(failed))
    """
)


def _modules() -> list[str]:
    names = []
    for base in (ROOT / "services", ROOT / "libs" / "common"):
        for path in sorted(base.rglob("*.py")):
            relative = path.relative_to(ROOT)
            if "gen" in relative.parts or "__pycache__" in relative.parts:
                continue
            if path.name == "__main__.py":
                continue  # runs the service
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return names


def test_import_linter_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# About 15 s of CPU (two children at a time); a loaded machine stretches the wall clock.
@pytest.mark.timeout(300)
def test_every_module_imports_on_its_own() -> None:
    modules = _modules()
    assert "services.workflow.server" in modules
    assert "libs.common.service" in modules
    result = subprocess.run(
        [sys.executable, "-c", _ISOLATED_IMPORTS, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    failed = result.stdout.strip().splitlines()[-1].removeprefix("FAILED:")
    assert failed == "", f"modules that fail to import on their own: {failed}\n{result.stderr}"
