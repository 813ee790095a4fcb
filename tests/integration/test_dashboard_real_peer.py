"""One real peer (`rankswarm node`, embedded model) and a `rankswarm coordinator`, as processes: the
status report the peer builds from its own step metrics reaches the dashboard's API intact, and
`rankswarm status` prints it. About a minute on 2 cores, mostly process start-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rankswarm.config import DemoConfig
from rankswarm.demo import DemoSwarm

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def state(swarm: DemoSwarm) -> dict:
    with urllib.request.urlopen(f"http://{swarm.ready['http_address']}/api/v1/state", timeout=10) as response:
        return json.loads(response.read())


def test_a_real_peers_status_reaches_the_dashboard(tmp_path):
    cfg = DemoConfig(peers=1, steps=7, run_dir=str(tmp_path / "demo"), run_id="dashboard-peer", round_interval=1.0,
                     prompts_per_step=4, group_size=4, node_overrides=["eval.num_problems=16"])
    swarm = DemoSwarm(cfg)
    try:
        swarm.start()
        deadline, peer, reported = time.monotonic() + 300, None, None
        while time.monotonic() < deadline:  # statuses go out after steps 1 and 6: wait for the second
            train = {r["step"]: r for r in swarm.peer_rows(0) if r.get("kind") == "train"}
            doc = state(swarm)
            items = doc["peers"]["items"]
            if 6 in train and items and items[0]["reward"] == train[6]["reward"] and doc["round"]:
                peer, reported = items[0], train[6]
                break
            assert swarm.peers[0].alive or swarm.peers[0].proc.returncode == 0, "the peer failed; see its log.txt"
            time.sleep(1.0)
        assert peer is not None, "the peer's step-6 status never reached the dashboard"
        rows = swarm.peer_rows(0)
        assert peer["status_schema"] == 3 and peer["tokens_per_s"] == reported["tokens_per_s"]
        assert peer["staleness"] == reported["staleness"] == 0  # sampling.max_staleness 0: on-policy
        assert peer["gradient_bytes_sent"] == reported["gradient_bytes_sent_total"]
        assert peer["er"] == reported["er"] and peer["kl"] == reported["kl"]
        assert reported["kl"] is None and doc["swarm"]["kl"] is None  # loss.kl_coef 0: KL not measured, not 0
        first_eval = next(r for r in rows if r.get("kind") == "eval")
        assert peer["heldout_accuracy"] == first_eval["greedy_accuracy"]
        assert peer["version"] == doc["coordinator"]["version"] and not peer["version_mismatch"]
        assert peer["state"] in ("online", "joining") and peer["address"].startswith("/ip4/127.0.0.1/")
        assert doc["distributions"]["er"]["num_responses"] == reported["er_deciles"]["count"]

        env = {**os.environ, "PYTHONPATH": str(REPO)}
        printed = subprocess.run([sys.executable, "-m", "rankswarm.cli", "status", "--coordinator",
                                  swarm.ready["grpc_address"]], capture_output=True, text=True, timeout=60,
                                 env=env, cwd=REPO)
        assert printed.returncode == 0, printed.stderr
        assert peer["peer_id"][:12] in printed.stdout and f"dashboard  http://{swarm.ready['http_address']}/" \
            in printed.stdout
    finally:
        swarm.stop()
