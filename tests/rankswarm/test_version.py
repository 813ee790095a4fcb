"""One version everywhere: the dashboard flags peers whose version differs from the coordinator's."""

import tomllib
from pathlib import Path

import pytest

import rankswarm
from node.swarm.peer import VERSION

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.unit
def test_package_peer_and_coordinator_report_the_same_version():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert rankswarm.__version__ == declared == VERSION
