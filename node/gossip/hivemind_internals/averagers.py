"""The averagers of one peer: hivemind's averager classes, told in their child process whose they are.

hivemind forks a child process per averager and runs the all-reduce there. A `PeerAverager`
carries its peer's traffic counters and aggregation policy into that process: when the child
starts (`run`), it makes them the process's own (`wire_taps.activate`, `robust_reducer.use_policy`),
so two peers in one process (tests) never count each other's traffic or share a policy.
"""

from __future__ import annotations

from hivemind.optim.grad_averager import GradientAverager
from hivemind.optim.power_sgd_averager import PowerSGDGradientAverager

from node.gossip.config import RobustConfig
from node.gossip.hivemind_internals import robust_reducer, wire_taps
from node.gossip.hivemind_internals.touches import Touch
from node.gossip.traffic import PeerTraffic

TOUCHES = (
    Touch("hivemind.averaging.averager.DecentralizedAverager", "run", "override",
          "runs in the averager's child process: make its counters and policy that process's own", ("self",)),
)


class PeerAverager:
    """Mixin for a hivemind averager class: built with `traffic=` and `robust=`, which its child process uses."""

    def __init__(self, *args, traffic: PeerTraffic, robust: RobustConfig, **kwargs):
        self.traffic, self.robust = traffic, robust  # before the base class forks the child process
        super().__init__(*args, **kwargs)

    def run(self):
        wire_taps.activate(self.traffic)  # this is the averager's child process: one averager, one peer
        robust_reducer.use_policy(self.robust)
        super().run()


class PeerGradientAverager(PeerAverager, GradientAverager):
    """hivemind's dense gradient averager, for one peer."""


class PeerPowerSGDAverager(PeerAverager, PowerSGDGradientAverager):
    """hivemind's PowerSGD gradient averager (rank-r factors, error feedback), for one peer."""
