"""A peer that fails exits: non-zero, within seconds, its error on one line, its p2p daemon gone.

Seen before: a bfloat16 peer raised while building hivemind's gradient averager, and the process
then never exited (hivemind's tracker thread and state-averager process kept it alive) while its
p2p daemon kept answering; a dead peer that looks alive. Here a fault is injected into a real
`rankswarm node` process, once while it builds its averagers and once at its first training
step, and everything is read back from outside: exit code, time, log, the process table.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]

# runs in the peer's process before the command; `when` picks where the fault strikes
INJECT = """
import sys, time
from pathlib import Path
from node.gossip.hivemind_internals import optimizer
from node.training import trainer

MARK = Path(sys.argv[1])

def fail(message):
    MARK.write_text(repr(time.time()))
    raise RuntimeError(message)

def while_building(self, factory, **kwargs):  # the state averager and tracker already run, as in the bf16 case
    fail("injected while building the gradient averager\\nsecond line of the message")

def at_first_step(self):
    fail("injected at the first training step")

if sys.argv[2] == "start":
    optimizer.AllOrNothingOptimizer._make_gradient_averager = while_building
else:
    trainer.Trainer.train_step = at_first_step
from rankswarm.cli import main
sys.exit(main(sys.argv[3:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_with(fragment: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in text:
            found.append(f"{cmdline.parent.name}: {text[:200]}")
    return found


@pytest.mark.parametrize("when", ["start", "step"])
def test_a_failed_peer_exits_quickly_with_its_error_and_stops_its_daemon(tmp_path, when):
    port = free_port()
    maddr = f"/ip4/127.0.0.1/tcp/{port}"
    mark = tmp_path / "failed_at"
    overrides = [f'run_dir="{tmp_path / "peer"}"', f'dht.host_maddrs=["{maddr}"]', "eval.num_problems=4",
                 "torch_threads=1", "progress=false", "algo.prompts_per_step=2", "sampling.group_size=2"]
    argv = [sys.executable, "-c", INJECT, str(mark), when, "node", *[a for o in overrides for a in ("--set", o)]]
    log = tmp_path / "log.txt"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        try:
            code = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the failed peer did not exit:\n" + log.read_text()[-3000:]) from None
    exited_at = time.time()
    text = log.read_text()
    assert mark.is_file(), f"the fault never struck:\n{text[-3000:]}"
    assert code == 1, text[-3000:]
    assert exited_at - float(mark.read_text()) < 20, "the peer took too long to exit after failing"
    assert "Traceback (most recent call last)" in text  # the traceback is in its log
    last = text.strip().splitlines()[-1]
    expected = ("injected while building the gradient averager | second line of the message" if when == "start"
                else "injected at the first training step")
    assert last == f"rankswarm node: failed: RuntimeError: {expected}"
    deadline = time.monotonic() + 5
    while processes_with(f"-hostAddrs={maddr}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_with(f"-hostAddrs={maddr}") == [], "its p2p daemon outlived the peer"
