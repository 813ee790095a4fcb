"""The image deploy/Dockerfile builds: it runs `rankswarm` as an unprivileged user, with the health check
and volume the deployments rely on. The image itself is built once per session (conftest.py)."""

from __future__ import annotations

import json

import pytest
from deploytools import podman

pytestmark = [pytest.mark.deploy, pytest.mark.slow]


def test_rankswarm_help_runs_in_the_image(image):
    result = podman("run", "--rm", "--network", "none", image, "--help")
    assert "doctor" in result.stdout and "coordinator" in result.stdout and "health" in result.stdout


def test_image_runs_unprivileged_with_a_volume_and_a_health_check(image):
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "rankswarm" and config["Entrypoint"] == ["rankswarm"]
    assert "/data" in config["Volumes"] and {"31337/tcp", "50051/tcp", "8080/tcp"} <= set(config["ExposedPorts"])
    whoami = podman("run", "--rm", "--network", "none", "--entrypoint", "id", image).stdout
    assert "uid=10001(rankswarm)" in whoami
    tools = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                   "command -v gcc cc make || echo no-compiler").stdout
    assert tools.strip() == "no-compiler", "build tools leaked into the final stage"
    health = podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", image).stdout
    assert "rankswarm" in health and "health" in health
