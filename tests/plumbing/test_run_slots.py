"""Peers sharing one run directory each claim a slot, and a dead peer's slot is free again at once."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from plumbing.run_slots import NoFreeSlot, claim_slot

pytestmark = pytest.mark.unit


def test_each_claim_gets_the_lowest_free_slot(tmp_path):
    first, second = claim_slot(tmp_path), claim_slot(tmp_path)
    assert (first.index, second.index) == (0, 1) and second.path == tmp_path / "slot-1"
    first.release()
    again = claim_slot(tmp_path)
    assert again.index == 0, "a released slot is taken back before a new one is made"
    with pytest.raises(NoFreeSlot, match="all 2 slots"):
        claim_slot(tmp_path, max_slots=2)
    for slot in (second, again):
        slot.release()


def test_the_slot_of_a_killed_process_is_free_again(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from plumbing.run_slots import claim_slot; "
                               f"s = claim_slot({str(tmp_path)!r}); print(s.index, flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=sys.path[0] or None,
                              env={"PYTHONPATH": ":".join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "0"
        taken = claim_slot(tmp_path)
        assert taken.index == 1  # slot-0 is held by the other process
        taken.release()
        holder.kill()
        holder.wait(10)
        deadline = time.monotonic() + 5
        while (slot := claim_slot(tmp_path)).index != 0 and time.monotonic() < deadline:
            slot.release()
        assert slot.index == 0, "the kernel drops a dead process's lock: its slot is free"
        slot.release()
    finally:
        holder.kill()
