"""The averagers of one peer: hivemind's averager classes, told in their child process whose they are.

hivemind forks a child process per averager and runs matchmaking, all-reduce and state transfer
there. A `PeerAverager` carries its peer's traffic counters, aggregation policy and allow list
into that process: when the child starts (`run`), it makes them the process's own
(`wire_taps.activate`, `robust_reducer.use_policy`), so two peers in one process (tests) never
count each other's traffic or share a policy. The allow list (node.gossip.trust.AllowList) is
enforced at every door of the averager: it opens no connection to a peer the list refuses (no
joining its group, no sending it parts to reduce, no downloading its state: `get_stub`), and it
turns away such a peer's requests to join this peer's group, to have parts reduced or to download
this peer's state (a banned or unadmitted identity gets no copy of the swarm's model). While the
peer downloads state (hivemind downloads through the state averager and the gradient averager), its
averagers also open no connection to a peer off the donor list (`AllowList.set_donors`): those whose
progress records the peer follows.
"""

from __future__ import annotations

import logging
from typing import AsyncIterator  # noqa: UP035 (hivemind recognises streaming handlers by typing.AsyncIterator)

from hivemind.optim.grad_averager import GradientAverager
from hivemind.optim.power_sgd_averager import PowerSGDGradientAverager
from hivemind.p2p import P2PContext
from hivemind.proto import averaging_pb2

from node.gossip.config import RobustConfig
from node.gossip.hivemind_internals import robust_reducer, wire_taps
from node.gossip.hivemind_internals.touches import Touch
from node.gossip.traffic import PeerTraffic
from node.gossip.trust import AllowList

log = logging.getLogger(__name__)

_AVERAGER = "hivemind.averaging.averager.DecentralizedAverager"
TOUCHES = (
    Touch(_AVERAGER, "run", "override",
          "runs in the averager's child process: make its counters, policy and allow list that process's own",
          ("self",)),
    Touch(_AVERAGER, "get_stub", "override", "open no connection to a peer the allow (or donor) list refuses",
          ("p2p", "peer", "namespace")),
    Touch(_AVERAGER, "rpc_join_group", "override", "turn away a refused peer that asks to join our group",
          ("self", "request", "context")),
    Touch(_AVERAGER, "rpc_aggregate_part", "override", "turn away a refused peer's parts",
          ("self", "stream", "context")),
    Touch(_AVERAGER, "rpc_download_state", "override", "give a refused peer no copy of our state",
          ("self", "_request", "_context")),
)

_allow: AllowList | None = None  # the allow list of the peer this child process averages for


class RefusedPeer(ConnectionError):
    """The allow list refuses this peer (banned, not admitted, or named by no trusted progress record)."""


def _refuses(peer) -> bool:
    """This child process's allow list refuses `peer` (a libp2p PeerID); none set yet refuses nobody."""
    return _allow is not None and not _allow.allows(peer.to_bytes())


def _refuses_as_donor(peer) -> bool:
    """This child process's allow list refuses `peer`, or its donor list leaves `peer` out."""
    return _allow is not None and not _allow.donates(peer.to_bytes())


class PeerAverager:
    """Mixin for a hivemind averager class: built with `traffic=`, `robust=` and `allow=`, which its child
    process uses."""

    ALLREDUCE_KIND = "gradients"  # the traffic counter its all-reduces count into (node.gossip.traffic)

    def __init__(self, *args, traffic: PeerTraffic, robust: RobustConfig, allow: AllowList, **kwargs):
        self.traffic, self.robust, self.allow = traffic, robust, allow  # before the base class forks
        super().__init__(*args, **kwargs)

    def run(self):
        global _allow
        # this is the averager's child process: one averager, one peer
        wire_taps.activate(self.traffic, self.ALLREDUCE_KIND)
        robust_reducer.use_policy(self.robust, on_caught=self._caught)
        _allow = self.allow
        super().run()

    def _caught(self, peer: bytes, what: str) -> None:
        if self.robust.caught_ban_s > 0:
            self.allow.deny(peer, self.robust.caught_ban_s)  # shared: this peer's other averagers refuse it too

    @classmethod
    def get_stub(cls, p2p, peer, *, namespace=None):
        if _refuses(peer):
            raise RefusedPeer(f"{peer} is not on this peer's allow list")
        if _refuses_as_donor(peer):  # hivemind's download logs this and asks the next donor
            raise RefusedPeer(f"{peer} is not a donor this peer follows")
        return super().get_stub(p2p, peer, namespace=namespace)

    # hivemind registers rpc_* handlers by their type hints (ServicerBase._collect_rpc_handlers)
    async def rpc_join_group(self, request: averaging_pb2.JoinRequest,
                             context: P2PContext) -> AsyncIterator[averaging_pb2.MessageFromLeader]:
        if _refuses(context.remote_id):
            log.info("turned away %s, which asked to join our averaging group: not on the allow list",
                     context.remote_id)
            yield averaging_pb2.MessageFromLeader(code=averaging_pb2.NOT_LOOKING_FOR_GROUP)
            return
        async for response in super().rpc_join_group(request, context):
            yield response

    async def rpc_aggregate_part(self, stream: AsyncIterator[averaging_pb2.AveragingData],
                                 context: P2PContext) -> AsyncIterator[averaging_pb2.AveragingData]:
        if _refuses(context.remote_id):
            log.info("turned away %s's parts: not on the allow list", context.remote_id)
            yield averaging_pb2.AveragingData(code=averaging_pb2.PROTOCOL_VIOLATION)
            return
        async for response in super().rpc_aggregate_part(stream, context):
            yield response

    async def rpc_download_state(self, request: averaging_pb2.DownloadRequest,
                                 context: P2PContext) -> AsyncIterator[averaging_pb2.DownloadData]:
        if _refuses(context.remote_id):
            # answered as hivemind answers when it shares no state: nothing, and the asker tries another peer
            log.info("refused %s a copy of our state: not on the allow list", context.remote_id)
            return
        async for data in super().rpc_download_state(request, context):
            yield data


class PeerGradientAverager(PeerAverager, GradientAverager):
    """hivemind's dense gradient averager, for one peer."""


class PeerPowerSGDAverager(PeerAverager, PowerSGDGradientAverager):
    """hivemind's PowerSGD gradient averager (rank-r factors, error feedback), for one peer."""
