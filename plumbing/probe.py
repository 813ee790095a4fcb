"""The probe every peer and coordinator answers: dial me back, and tell me your clock and version.

Whether a process can be reached from outside on the addresses it announces can only be told
from outside (a NAT or firewall drops what it does not expect), so `rankswarm doctor` asks a
member of the swarm, as Petals' servers do at start. The member answers on hivemind's p2p
(handler `rankswarm.v1.probe`, `swarm.proto` ProbeRequest/ProbeReply): it starts a throw-away p2p
daemon with no relay whose only bootstrap peers are the asker's addresses, so it succeeds only
if a fresh direct connection does. It dials the asker's own peer id only (a member never dials a
third party for someone), one probe at a time.

    serve_probes(dht)                                  # in a peer or the coordinator
    answer = ask(dht, member_peer_id, my_maddrs)       # in the doctor: ProbeAnswer (reply, round trip)

Both run inside hivemind's DHT process (`DHT.run_coroutine`), where its p2p daemon lives.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from dataclasses import dataclass

from hivemind.p2p import P2P, P2PDaemonError, PeerID
from hivemind.utils import get_dht_time

from plumbing import __version__
from protos import records, swarm_pb2

log = logging.getLogger(__name__)

PROBE_HANDLER = "rankswarm.v1.probe"
DIAL_TIMEOUT_S = 15.0
_dial_lock: asyncio.Lock | None = None  # one dial-back at a time per DHT process (made in its event loop)


def serve_probes(dht) -> None:
    """Answer probes from now on (registers the handler on `dht`'s p2p daemon; waits until it is registered)."""
    dht.run_coroutine(_register)


async def _register(dht, node) -> None:
    await node.p2p.add_protobuf_handler(PROBE_HANDLER, _answer, swarm_pb2.ProbeRequest)


async def _answer(request: swarm_pb2.ProbeRequest, context) -> swarm_pb2.ProbeReply:
    try:
        records.validate(request)
    except records.RecordError as err:
        return records.build(swarm_pb2.ProbeReply, now=get_dht_time(), version=__version__,
                             dial_error=f"refused the probe: {err}"[:512])
    dialed, error = False, ""
    if request.maddrs:
        dialed, error = await _dial_back(list(request.maddrs), context.remote_id)
    return records.build(swarm_pb2.ProbeReply, now=get_dht_time(), version=__version__, dialed=dialed,
                         dial_error=error[:512])


async def _dial_back(maddrs: list[str], asker: PeerID) -> tuple[bool, str]:
    global _dial_lock
    if _dial_lock is None:
        _dial_lock = asyncio.Lock()
    targets = [f"{m.split('/p2p/')[0]}/p2p/{asker.to_base58()}" for m in maddrs]
    async with _dial_lock:
        try:
            dialer = await P2P.create(initial_peers=targets, dht_mode="client", use_relay=False, auto_nat=False,
                                      nat_port_map=False, startup_timeout=DIAL_TIMEOUT_S)
        except P2PDaemonError as err:  # p2pd exits when it reaches none of its bootstrap peers
            return False, "no direct connection: " + re.sub(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ", "", str(err))
        except Exception as err:  # network boundary: whatever went wrong is the answer, never a crash
            log.warning("probe dial-back failed: %s", err)
            return False, f"dial-back failed: {type(err).__name__}: {err}"
        await dialer.shutdown()
        return True, ""


@dataclass(frozen=True)
class ProbeAnswer:
    """A member's reply and when it was asked and answered (this process's DHT time)."""

    peer_id: str
    reply: swarm_pb2.ProbeReply
    sent_at: float
    received_at: float

    @property
    def clock_offset(self) -> float:
        """The member's clock minus ours, assuming it answered halfway through the round trip (seconds)."""
        return self.reply.now - (self.sent_at + self.received_at) / 2

    @property
    def uncertainty(self) -> float:
        """Half the round trip: how far off `clock_offset` can be (the dial-back included, if one was asked)."""
        return (self.received_at - self.sent_at) / 2


async def _ask(dht, node, peer_id: str, maddrs: tuple[str, ...]) -> tuple[bytes, float, float]:
    request = records.build(swarm_pb2.ProbeRequest, maddrs=list(maddrs))
    sent_at = get_dht_time()
    reply = await node.p2p.call_protobuf_handler(PeerID.from_base58(peer_id), PROBE_HANDLER, request,
                                                 swarm_pb2.ProbeReply)
    return reply.SerializeToString(), sent_at, get_dht_time()


def ask(dht, peer_id: str, maddrs: list[str] | tuple[str, ...] = (),
        timeout: float = DIAL_TIMEOUT_S + 10) -> ProbeAnswer:
    """Probe the member `peer_id` (base58) through `dht`; it dials back `maddrs` if given. Raises on no answer
    (TimeoutError, hivemind's P2P errors) and RecordError on a malformed reply."""
    future = dht.run_coroutine(functools.partial(_ask, peer_id=peer_id, maddrs=tuple(maddrs)), return_future=True)
    data, sent_at, received_at = future.result(timeout=timeout)
    return ProbeAnswer(peer_id, records.decode(swarm_pb2.ProbeReply, data), sent_at, received_at)


async def _connected(dht, node) -> list[str]:
    return [info.peer_id.to_base58() for info in await node.p2p.list_peers()]


def connected_peers(dht) -> list[str]:
    """The peer ids (base58) this DHT's p2p daemon is connected to right now."""
    return dht.run_coroutine(_connected)
