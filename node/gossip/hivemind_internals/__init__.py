"""The one place where rankswarm reaches past hivemind's public API.

hivemind.Optimizer keeps peers in step in the common case; where it lets one peer's weights
leave the swarm's (node.gossip.hivemind_internals.optimizer says which cases and how each is
closed), and where it gives us no way to count what crosses the wire (wire_taps), the code here
overrides its private methods, wraps its methods, replaces module functions or reads internal
fields. Nothing outside this package does (tests/node/test_hivemind_seam.py checks both that
and, against the installed hivemind, every name declared in `TOUCHES`).

Everything else uses hivemind's public API: hivemind.DHT, the progress tracker's records and
public fields, compression classes, the averagers' constructor arguments and factories.
"""

from node.gossip.hivemind_internals.optimizer import TOUCHES as _OPTIMIZER_TOUCHES
from node.gossip.hivemind_internals.optimizer import AllOrNothingOptimizer, epoch_group_bits
from node.gossip.hivemind_internals.wire_taps import TOUCHES as _WIRE_TOUCHES
from node.gossip.hivemind_internals.wire_taps import CountedGradientAverager, CountedPowerSGDAverager, install

TOUCHES = _OPTIMIZER_TOUCHES + _WIRE_TOUCHES

__all__ = ["TOUCHES", "AllOrNothingOptimizer", "CountedGradientAverager", "CountedPowerSGDAverager",
           "epoch_group_bits", "install"]
