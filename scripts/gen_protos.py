"""Regenerate libs/common/gen/heddle/v1 from protos/heddle/v1 (make protos), and the SDK's
copy of the modules a worker needs under libs/sdk/heddle_sdk/_proto/heddle/v1.

`python scripts/gen_protos.py --check` regenerates into a temporary folder and exits 1 when
the checked-in modules differ, so a stale generation fails the tests.
"""

from __future__ import annotations

import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "libs" / "common" / "gen"
# The SDK is installed on its own (no libs/common), so it carries the worker protocol's
# modules. The same .proto files under the same names: a process that loads both copies (a
# test running a cluster and a worker) registers identical files once in the descriptor pool.
SDK_GEN = ROOT / "libs" / "sdk" / "heddle_sdk" / "_proto"
SDK_PROTOS = ["heddle/v1/common.proto", "heddle/v1/node.proto", "heddle/v1/worker.proto"]
_ABSOLUTE_IMPORT = re.compile(r"^from heddle\.v1 import ", re.MULTILINE)


def generate(out: Path) -> None:
    """Run protoc over every .proto file, writing Python, gRPC and .pyi stubs under out."""
    _protoc(out, sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto")))


def generate_sdk(out: Path) -> None:
    """The SDK's modules: protoc's output with `from heddle.v1 import` made relative, so they
    resolve inside heddle_sdk._proto without a top-level `heddle` package."""
    _protoc(out, SDK_PROTOS)
    for module in (out / "heddle").rglob("*_pb2*.py*"):
        module.write_text(_ABSOLUTE_IMPORT.sub("from . import ", module.read_text()))
    (out / "__init__.py").touch()


def _protoc(out: Path, files: list[str]) -> None:
    include = Path(protoc.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--pyi_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in {p.parent for p in (out / "heddle").rglob("*_pb2.py")} | {out / "heddle"}:
        (package / "__init__.py").touch()


def differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    found = [*cmp.left_only, *cmp.right_only, *cmp.diff_files]
    for name, sub in cmp.subdirs.items():
        found += [f"{name}/{d}" for d in differences(Path(sub.left), Path(sub.right))]
    return found


def main() -> None:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp) / "common")
            stale = differences(Path(tmp) / "common" / "heddle", GEN / "heddle")
            generate_sdk(Path(tmp) / "sdk")
            stale += [
                f"sdk: {name}"
                for name in differences(Path(tmp) / "sdk" / "heddle", SDK_GEN / "heddle")
            ]
        if stale:
            print("generated protobuf modules are stale (run `make protos`):", *stale, sep="\n  ")
            raise SystemExit(1)
        print("generated protobuf modules are up to date")
        return
    shutil.rmtree(GEN / "heddle", ignore_errors=True)
    GEN.mkdir(parents=True, exist_ok=True)
    generate(GEN)
    shutil.rmtree(SDK_GEN / "heddle", ignore_errors=True)
    SDK_GEN.mkdir(parents=True, exist_ok=True)
    generate_sdk(SDK_GEN)
    print(f"generated into {GEN.relative_to(ROOT)} and {SDK_GEN.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
