"""Item 14: the distribution has a name that is free on PyPI ("heddle" is someone else's
placeholder there), and still installs the `heddle` command."""

from __future__ import annotations

import importlib.metadata
import tomllib

from tests.cli.conftest import REPO

#: Checked free on PyPI (`pip index versions NAME`: no matching distribution) when chosen;
#: "heddle" itself answered with someone else's 0.0.0.
SERVER_DISTRIBUTION = "heddle-engine"
SDK_DISTRIBUTION = "heddle-sdk"


def test_the_distribution_is_heddle_engine_with_the_heddle_command() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == SERVER_DISTRIBUTION
    assert project["scripts"] == {"heddle": "libs.cli.main:main"}
    sdk = tomllib.loads((REPO / "libs/sdk/pyproject.toml").read_text())["project"]
    assert sdk["name"] == SDK_DISTRIBUTION
    installed = importlib.metadata.distribution(SERVER_DISTRIBUTION)
    scripts = {e.name: e.value for e in installed.entry_points if e.group == "console_scripts"}
    assert scripts == {"heddle": "libs.cli.main:main"}
