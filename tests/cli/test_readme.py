"""The README, followed literally on a copy of the repository (scripts/readme_check.py):
every command of its shell blocks, in order, against a fresh `make run`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tests.cli.conftest import REPO


def _readme_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_check", REPO / "scripts/readme_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_check"] = module
    spec.loader.exec_module(module)
    return module


def test_every_readme_command_works_as_written() -> None:
    check = _readme_check()
    outcomes = check.check()
    report = "\n".join(
        f"{o.command}\n  {'; '.join(o.problems)}\n  out: {o.out[-500:]}\n  err: {o.err[-500:]}"
        for o in outcomes
        if o.problems
    )
    assert not report, report
    ran = [o.command for o in outcomes if not o.skipped]
    assert len(ran) >= 10 and any("/api/v1/node-types" in command for command in ran)


def test_the_check_reads_the_shell_blocks_and_skips_only_what_is_there(tmp_path: Path) -> None:
    check = _readme_check()
    sample = (
        "text\n```bash\nmake run   # start\nA=1 \\\n  echo $A\n# a comment\n```\n"
        "```\nnot a command\n```\n```yaml\nname: x\n```\n```sh\nheddle workflows list\n```\n"
    )
    assert check.shell_commands(sample) == [
        "make run   # start",
        "A=1 echo $A",
        "heddle workflows list",
    ]
    commands = check.shell_commands((REPO / "README.md").read_text())
    for skipped in check.SKIPPED:  # a stale skip would hide nothing, or a renamed command
        assert any(command.startswith(skipped) for command in commands), skipped
