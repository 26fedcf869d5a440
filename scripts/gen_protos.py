"""Regenerate libs/common/gen/heddle/v1 from protos/heddle/v1 (make protos).

`python scripts/gen_protos.py --check` regenerates into a temporary folder and exits 1 when
the checked-in modules differ, so a stale generation fails the tests.
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GEN = ROOT / "libs" / "common" / "gen"


def generate(out: Path) -> None:
    """Run protoc over every .proto file, writing Python, gRPC and .pyi stubs under out."""
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
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
            generate(Path(tmp))
            stale = differences(Path(tmp) / "heddle", GEN / "heddle")
        if stale:
            print("generated protobuf modules are stale (run `make protos`):", *stale, sep="\n  ")
            raise SystemExit(1)
        print("generated protobuf modules are up to date")
        return
    shutil.rmtree(GEN / "heddle", ignore_errors=True)
    GEN.mkdir(parents=True, exist_ok=True)
    generate(GEN)
    print(f"generated into {GEN.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
