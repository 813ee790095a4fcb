"""The files in deploy/ agree with the code they configure: every RANKSWARM_* variable they set and every
TOML they ship is a valid config, and every metric the Grafana dashboard plots exists.

Fast and offline (no podman): a misspelt variable in the image or in compose.yaml would otherwise
only surface as a container that exits with a config error. The deploy tier (tests/deploy) runs them.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from coordinator.config import CoordinatorConfig
from coordinator.dashboard.prometheus import _FAMILIES
from node.swarm.config import NodeConfig
from plumbing.config_loading import env_prefix, load_config

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# what a role needs that has no default (set by the image, or by compose, when the file checked sets it not)
ROLES = {"NODE": (NodeConfig, {}), "COORDINATOR": (CoordinatorConfig, {"RUN": "r", "DB_PATH": "/data/h.db"})}


def resolved(value: str) -> str:
    """A compose value with ${VAR:-default} replaced by its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def check_environment(environ: dict[str, str], where: str) -> None:
    """Every RANKSWARM_<ROLE>_ variable of `environ` loads into its role's config."""
    for role, (model, required) in ROLES.items():
        prefix = env_prefix(role.lower())
        ours = {k: v for k, v in environ.items() if k.startswith(prefix)}
        if not ours:
            continue
        try:
            load_config(model, env_prefix=prefix, environ={**{prefix + k: v for k, v in required.items()}, **ours})
        except ValueError as err:
            raise AssertionError(f"{where}: {err}") from None


def test_the_images_environment_is_valid_config():
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    block = next(line for line in text.splitlines() if line.startswith("ENV PATH="))
    environ = dict(word.split("=", 1) for word in shlex.split(block[len("ENV "):]))
    assert environ["RANKSWARM_NODE_HEALTH_FILE"] == environ["RANKSWARM_COORDINATOR_HEALTH_FILE"]
    assert f'"--file", "{environ["RANKSWARM_NODE_HEALTH_FILE"]}"' in text  # the HEALTHCHECK reads that file
    check_environment(environ, "deploy/Dockerfile")


def test_compose_services_and_shipped_tomls_are_valid_config():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"coordinator", "peer", "prometheus", "grafana"} <= set(services)
    for name in ("coordinator", "peer"):
        check_environment({k: resolved(v) for k, v in services[name]["environment"].items()}, f"compose {name}")
    assert services["peer"]["environment"]["RANKSWARM_NODE_COORDINATOR__BOOTSTRAP"] == "http://coordinator:8080"
    node = load_config(NodeConfig, [DEPLOY / "config" / "node.toml"])
    assert node.shared_run_dir, "scaled peers share one volume: each needs its own slot"
    load_config(CoordinatorConfig, [DEPLOY / "config" / "coordinator.toml"], ['run="r"', 'db_path="/data/h.db"'])


def test_the_slurm_script_sets_valid_config():
    text = (DEPLOY / "slurm" / "rankswarm-peers.sbatch").read_text()
    names = set(re.findall(r"export (RANKSWARM_NODE_\w+)=", text))
    assert {"RANKSWARM_NODE_RUN_DIR", "RANKSWARM_NODE_DHT__HOST_MADDRS", "RANKSWARM_NODE_SEED",
            "RANKSWARM_NODE_COORDINATOR__BOOTSTRAP"} <= names
    samples = {"RANKSWARM_NODE_RUN_DIR": "/scratch/peer-0", "RANKSWARM_NODE_DHT__HOST_MADDRS":
               '["/ip4/0.0.0.0/tcp/31337"]', "RANKSWARM_NODE_SEED": "1001", "RANKSWARM_NODE_PROGRESS": "false",
               "RANKSWARM_NODE_COORDINATOR__BOOTSTRAP": "http://coordinator:8080"}
    assert names <= set(samples)
    check_environment(samples, "deploy/slurm/rankswarm-peers.sbatch")


def test_the_grafana_dashboard_plots_only_metrics_the_coordinator_exports():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "rankswarm.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"rankswarm_\w+", expr)}
    assert used and used <= set(_FAMILIES), sorted(used - set(_FAMILIES))
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics" and scrape["static_configs"][0]["targets"] == ["coordinator:8080"]
