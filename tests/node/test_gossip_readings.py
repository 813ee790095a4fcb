"""`Steady` (node/gossip/readings.py): a reading of the DHT is believed once reads have said it for a while."""

from node.gossip import readings
from node.gossip.readings import Steady


def test_a_condition_is_believed_only_after_it_held_without_a_break(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(readings.time, "monotonic", lambda: now[0])
    alone = Steady(seconds=1.0)
    assert not alone.holds(True)  # one read is no evidence
    now[0] += 0.6
    assert not alone.holds(True)
    now[0] += 0.5
    assert alone.holds(True)  # 1.1 s of reads that said so
    assert not alone.holds(False)  # a read that says otherwise starts it over
    now[0] += 0.1
    assert not alone.holds(True)
    now[0] += 1.0
    assert alone.holds(True)
