"""The one place where rankswarm reaches past hivemind's public API.

hivemind.Optimizer keeps peers in step in the common case; where it lets one peer's weights
leave the swarm's (optimizer.py says which cases and how each is closed), where it trusts every
sender of an all-reduce (robust_reducer.py), and where it gives us no way to count what crosses
the wire (wire_taps.py), the code here overrides its private methods, wraps its methods, replaces
module names or reads internal fields. Nothing outside this package does
(tests/node/test_hivemind_seam.py checks both that and, against the installed hivemind, every
name declared in `TOUCHES`).

Everything else uses hivemind's public API: hivemind.DHT, the progress tracker's records and
public fields, compression classes, the averagers' constructor arguments and factories.
"""

from node.gossip.hivemind_internals import averagers, optimizer, robust_reducer, wire_taps
from node.gossip.hivemind_internals.averagers import PeerGradientAverager, PeerPowerSGDAverager
from node.gossip.hivemind_internals.optimizer import AllOrNothingOptimizer, epoch_group_bits

TOUCHES = optimizer.TOUCHES + averagers.TOUCHES + robust_reducer.TOUCHES + wire_taps.TOUCHES


def install() -> None:
    """Put every tap and replacement in place, once per process, before any averager forks."""
    wire_taps.install()
    robust_reducer.install()


__all__ = ["TOUCHES", "AllOrNothingOptimizer", "PeerGradientAverager", "PeerPowerSGDAverager", "epoch_group_bits",
           "install"]
