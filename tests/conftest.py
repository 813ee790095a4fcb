"""Shared pytest set-up: keep torch to the cores CI has and make runs reproducible."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


DEPLOY = Path(__file__).parent / "deploy"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items) -> None:
    """The units `make test` hands its pytest-xdist workers (`--dist loadgroup`): a test module, whose
    tests share module-scoped fixtures (a swarm started once), or the whole deploy tier, whose tests share
    one podman store, the image and the one-node Slurm, so run one after another."""
    for item in items:
        group = "deploy" if DEPLOY in item.path.parents else str(item.path.relative_to(item.config.rootpath))
        item.add_marker(pytest.mark.xdist_group(group))


DEPLOY_TIMINGS: dict = {}  # what the deploy tier measured, reported by the pytest-xdist worker that ran it


def pytest_testnodedown(node, error) -> None:
    DEPLOY_TIMINGS.update(getattr(node, "workeroutput", {}).get("deploy_timings", {}))


def pytest_terminal_summary(terminalreporter) -> None:
    if DEPLOY_TIMINGS:
        terminalreporter.write_line("deploy tier: " + ", ".join(f"{k} {v}" for k, v in DEPLOY_TIMINGS.items()))
