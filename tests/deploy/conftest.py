"""Fixtures of the deploy tier (`pytest -m deploy`): the image, built once per session, and the tools' checks.

Every test here is marked `deploy` (and `slow`). A test whose tools are missing (podman, mmdebstrap,
Slurm, the `deploy` extra; see deploytools.missing) is skipped saying what is missing, unless
RANKSWARM_REQUIRE_DEPLOY=1 (set by .ci/run) makes that a failure. The session prints what the tier
measured (base image, image build, image size) at the end.
"""

from __future__ import annotations

import os

import deploytools  # next to this file (pytest puts the test directory on sys.path)
import pytest

PODMAN_TOOLS = ("podman", "buildah", "runc", "nsenter", "ip", "mmdebstrap", "/usr/lib/podman/netavark",
                "/usr/lib/podman/aardvark-dns")
TIMINGS: dict = {}


def require(*tools: str) -> None:
    """Skip (or, with RANKSWARM_REQUIRE_DEPLOY=1, fail) unless every tool is here."""
    absent = deploytools.missing(*tools)
    if absent:
        reason = f"the deploy tier needs {', '.join(absent)} (.ci/run installs them)"
        if os.environ.get("RANKSWARM_REQUIRE_DEPLOY") == "1":
            pytest.fail(reason + "; RANKSWARM_REQUIRE_DEPLOY=1 makes this a failure", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def image() -> str:
    """The rankswarm image of the current sources (built once per session, or reused by its source hash)."""
    require(*PODMAN_TOOLS)
    return deploytools.ensure_image(TIMINGS)


@pytest.fixture(scope="session")
def prometheus_image(image) -> str:
    return deploytools.ensure_prometheus_image()


def pytest_sessionfinish(session) -> None:
    """Hand what the tier measured to the summary (tests/conftest.py), through the controller when this is a
    pytest-xdist worker."""
    if TIMINGS:
        worker_output = getattr(session.config, "workeroutput", None)
        if worker_output is not None:
            worker_output["deploy_timings"] = dict(TIMINGS)
        else:
            session.config.deploy_timings.update(TIMINGS)
