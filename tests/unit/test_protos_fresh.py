"""The checked-in generated protobuf modules match protos/ (Temporal's generation check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_modules_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_imports_resolve_without_path_edits() -> None:
    from heddle.v1 import workflow_pb2, workflow_pb2_grpc

    assert workflow_pb2.DESCRIPTOR.package == "heddle.v1"
    assert hasattr(workflow_pb2_grpc, "WorkflowServiceStub")
