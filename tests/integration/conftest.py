"""Fixtures the integration tests share."""

from __future__ import annotations

import multiprocessing as mp

import pytest


class ReducerFaults:
    """Makes one peer's next connections to remote reducers fail inside its averager processes, so
    that hivemind itself hands that peer a partial average ("received X% results") and reports
    success. Installed before the averagers fork; the victim and count live in shared memory."""

    def __init__(self):
        self.victim = mp.Array("c", 128)
        self.remaining = mp.Value("i", 0)

    def fail_next(self, peer_id, count: int = 1) -> None:
        self.victim.value = str(peer_id).encode()
        self.remaining.value = count

    def should_fail(self, peer_id) -> bool:
        if str(peer_id).encode() != self.victim.value:
            return False
        with self.remaining.get_lock():
            if self.remaining.value <= 0:
                return False
            self.remaining.value -= 1
            return True


@pytest.fixture(scope="module")
def reducer_faults():
    from hivemind.averaging.allreduce import AllReduceRunner

    faults, original = ReducerFaults(), AllReduceRunner._get_peer_stub

    def get_peer_stub(runner, peer):
        if faults.should_fail(runner.peer_id):
            raise ConnectionError("injected by the test: reducer unreachable")
        return original(runner, peer)

    AllReduceRunner._get_peer_stub = get_peer_stub
    try:
        yield faults
    finally:
        AllReduceRunner._get_peer_stub = original
