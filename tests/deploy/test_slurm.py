"""deploy/slurm/rankswarm-peers.sbatch on a one-node Slurm cluster started for the test.

munged, slurmctld and slurmd run as children of the test (their own key, sockets, state and
non-default ports in a temporary directory; SLURM_CONF points the client commands at it), next to a
`rankswarm coordinator` on 127.0.0.1. The job is submitted as an operator would, with the
coordinator's dashboard URL as its parameter, as a job array of two tasks (two "nodes" of one peer
each, no GPU here), and `sbatch --wait` returns its exit code: both peers must join through the
bootstrap info, train a few steps together and exit 0, keeping their identities in their own run
directories. About a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require
from deploytools import REPO

from plumbing.processes import ManagedProcess, rankswarm_argv, stop_all, wait_for_json

pytestmark = [pytest.mark.deploy, pytest.mark.slow]

SBATCH = REPO / "deploy" / "slurm" / "rankswarm-peers.sbatch"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def slurm_conf(root: Path, node: str) -> str:
    return f"""ClusterName=rankswarm-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture
def slurm(tmp_path):
    """A one-node Slurm cluster (munged, slurmctld, slurmd in the foreground); yields the client environment."""
    require("munged", "slurmctld", "slurmd", "sbatch")
    root = tmp_path / "slurm"
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    node = socket.gethostname().split(".")[0]
    (root / "slurm.conf").write_text(slurm_conf(root, node))
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    daemons = [ManagedProcess("munged", ["munged", "-F", "--force", f"--key-file={key}", f"--socket={root}/munge.sock",
                                         f"--pid-file={root}/munged.pid", f"--seed-file={root}/munge.seed",
                                         f"--log-file={root}/munged.log"], root / "munged.out")]
    try:
        time.sleep(0.5)
        for daemon in ("slurmctld", "slurmd"):
            daemons.append(ManagedProcess(daemon, [daemon, "-D", "-f", str(root / "slurm.conf")],
                                          root / f"{daemon}.out", env=env))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            idle = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env, timeout=10)
            if idle.stdout.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the test cluster's node did not come up:\n" + "\n".join(d.tail() for d in daemons))
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True, timeout=30)
        stop_all(list(reversed(daemons)), grace=5)


def test_the_sbatch_script_runs_a_job_array_of_peers_that_train_and_exit_0(slurm, tmp_path):
    run_dir = tmp_path / "coordinator"
    coordinator = ManagedProcess("coordinator", rankswarm_argv(
        "coordinator", "--ready-file", str(run_dir / "ready.json"), "--set", 'run="slurm-test"',
        "--set", f"db_path={json.dumps(str(run_dir / 'history.db'))}", "--set", 'listen="127.0.0.1:0"',
        "--set", 'http_listen="127.0.0.1:0"', "--set", 'dht.host_maddrs=["/ip4/127.0.0.1/tcp/0"]',
        "--set", "round_interval=1.0"), run_dir / "log.txt", env={"PYTHONPATH": str(REPO)})
    try:
        ready = wait_for_json(run_dir / "ready.json", 120, processes=[coordinator])
        env = {**slurm, "RANKSWARM_CMD": f"{sys.executable} -m rankswarm.cli", "PYTHONPATH": str(REPO),
               "RANKSWARM_ROOT": str(tmp_path / "runs"), "RANKSWARM_DHT_PORT": "0"}
        overrides = ["steps=3", "algo.prompts_per_step=4", "sampling.group_size=4", "eval.every=0",
                     "eval.num_problems=8", "torch_threads=1", "gossip.target_batch_size=32", "gossip.min_peers=2",
                     "gossip.matchmaking_time=3.0", "checkpoint.every=1"]
        started = time.monotonic()
        job = subprocess.run(
            ["sbatch", "--wait", "--array=0-1", "--gpus-per-task=0", "--ntasks-per-node=1", "--cpus-per-task=1",
             "--job-name=slurm-test", f"--output={tmp_path}/job-%a.out", str(SBATCH), f"http://{ready['http_address']}",
             *[arg for o in overrides for arg in ("--set", o)]],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=420)
        minutes = (time.monotonic() - started) / 60
    finally:
        stop_all([coordinator])
    outputs = {p.name: p.read_text() for p in sorted(tmp_path.glob("job-*.out"))}
    assert job.returncode == 0, job.stdout + job.stderr + "\n".join(outputs.values())
    assert len(outputs) == 2 and all("bootstrap: run slurm-test" in text for text in outputs.values()), outputs
    for index in (0, 1):
        peer_dir = tmp_path / "runs" / "slurm-test" / f"node-{index}" / "peer-0"
        rows = [json.loads(line) for line in (peer_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows if r.get("kind") == "train"] == [1, 2, 3]
        assert (peer_dir / "dht.identity").is_file() and (peer_dir / "signing.key").is_file()
    print(f"slurm job: {minutes:.1f} min")
