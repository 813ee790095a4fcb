"""One version everywhere: the dashboard flags peers whose version differs from the coordinator's."""

import importlib.metadata

import pytest

import plumbing
import rankswarm

pytestmark = pytest.mark.unit


def test_the_installed_package_the_command_and_the_plumbing_report_one_version():
    # pyproject.toml reads the version from plumbing.__version__; peers and the coordinator report that
    assert importlib.metadata.version("rankswarm") == plumbing.__version__ == rankswarm.__version__
