"""Import checks of the execution core, each in a fresh interpreter: the core loads no I/O
library, and the driver (runner) does not import the engine (no engine <-> runner cycle)."""

from __future__ import annotations

import subprocess
import sys


def test_the_core_imports_no_io_library() -> None:
    code = (
        "import sys, services.workflow.execution, services.workflow.execution.history\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('asyncio', 'grpc', 'sqlalchemy', 'prometheus_client', 'opentelemetry'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_runner_does_not_import_the_engine() -> None:
    code = (
        "import sys, services.workflow.runner\n"
        "sys.exit(1 if 'services.workflow.engine' in sys.modules else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
