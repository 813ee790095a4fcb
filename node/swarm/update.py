"""`GossipUpdate`: the swarm's `UpdateRule`, averaging compressed gradients before each step.

Gradients are clipped locally first, so one peer's outlier batch cannot dominate the
average; byte counters accumulate so the peer can report its traffic and compression ratio.
"""

from __future__ import annotations

import torch

from node.training.seams import UpdateReport


class GossipUpdate:
    """Clip, then hand the gradients to `GradientGossip` (which averages and steps)."""

    def __init__(self, gossip, params: list[torch.nn.Parameter], grad_clip: float):
        self.gossip = gossip
        self.params = params
        self.grad_clip = grad_clip
        self.dense_bytes_total = 0
        self.rounds_averaged = 0
        self.rounds_failed = 0
        self.resyncs = 0
        self.rounds_dropped = 0

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.gossip.optimizer

    def load_state_from_peers(self) -> bool:
        return self.gossip.load_state_from_peers()

    def settle(self) -> dict:
        """After the last step: end with the swarm's weights (`GradientGossip.settle`); a metrics row."""
        report = self.gossip.settle()
        return {"settled": report.settled, "epoch": report.epoch, "num_peers": report.peers,
                "settle_downloads": report.downloads, "time_settling": report.seconds,
                "param_fingerprint": report.fingerprint, **self.gossip.traffic_totals()}

    def shutdown(self) -> None:
        self.gossip.shutdown()

    def apply(self, num_samples: int) -> UpdateReport:
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip))
        if not torch.isfinite(torch.tensor(norm)):
            self.gossip.zero_grad()
            return UpdateReport(False, norm, {"update_skipped": "non-finite gradient"})
        report = self.gossip.step(num_samples)
        self.dense_bytes_total += report.dense_bytes
        if report.error:
            self.rounds_failed += 1
        elif report.dense_bytes:
            self.rounds_averaged += 1
        extra = {
            "epoch": report.epoch, "num_peers": report.num_peers, "bytes_sent": report.bytes_sent,
            "bytes_received": report.bytes_received, **self.gossip.traffic_totals(),
            "dense_bytes_total": self.dense_bytes_total,
            "compression_ratio": (report.dense_bytes / report.bytes_sent) if report.bytes_sent else None,
            "time_averaging": report.averaging_seconds, "time_allreduce": report.allreduce_seconds,
            "time_waiting": report.waiting_seconds,
            "averaging_error": report.error, "rounds_averaged": self.rounds_averaged,
            "rounds_failed": self.rounds_failed,
        }
        self.resyncs += int(report.resynced)
        self.rounds_dropped += int(report.dropped)
        extra["resyncs"] = self.resyncs
        extra["rounds_dropped"] = self.rounds_dropped
        extra["rounds_partial"] = self.gossip.optimizer.rounds_partial
        consensus = getattr(self.gossip, "consensus", None)
        extra["weights_disagreements"] = consensus.disagreements if consensus is not None else None
        if report.fingerprint is not None:
            # lets anyone check that peers at the same epoch hold the same weights
            extra["param_fingerprint"] = report.fingerprint
        return UpdateReport(report.applied, norm, extra)


def build_gossip_update(dht, model: torch.nn.Module, cfg, identity=None) -> GossipUpdate:
    """The swarm's update rule for a `NodeConfig`: AdamW behind compressed gradient averaging."""
    from node.gossip.averaging import GradientGossip

    params = [p for p in model.parameters() if p.requires_grad]
    opt = cfg.optim
    gossip = GradientGossip(
        dht, params, lambda ps: torch.optim.AdamW(ps, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay),
        cfg.gossip, run_id=cfg.run_id, batch_size_per_step=cfg.algo.prompts_per_step * cfg.sampling.group_size,
        identity=identity)
    return GossipUpdate(gossip, params, opt.grad_clip)
