"""`GossipConfig`: how a peer averages gradients with the swarm."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RobustConfig(BaseModel):
    """How reducers aggregate each part of an all-reduce (node/gossip/robust.py; docs/security.md)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description=(
        "Drop non-finite parts and ban their senders for the round, cap every sender's weight at the group's "
        "median, and CenteredClip each part (3+ senders). false: hivemind's plain weighted mean, which one "
        "NaN, one amplified gradient or one inflated batch claim takes over."))
    radius: float = Field(1.0, gt=0, le=100, description=(
        "CenteredClip radius tau as a multiple of the median distance of the parts to their coordinate-wise "
        "median: a sender farther away moves the result by at most tau times its weight share. 1.0 kept the "
        "honest pair's average within 0.9 cosine of their mean against a 1000x sign flip at gradient noise as "
        "large as the signal, and 3 honest parts within 0.999 of theirs (docs/benchmarks.md)."))
    iterations: int = Field(3, ge=1, le=50, description="CenteredClip iterations.")
    reject_radius: float = Field(10.0, ge=1, le=1e6, description=(
        "A part farther than this many clip radii (tau) from the coordinate-wise median counts for nothing in "
        "that part (3+ senders). Clipping bounds what one sender moves, but a blatant liar clipped to tau "
        "still pulls every part of every round; measured, a x -1000 sign flip took about half the honest "
        "gain that way. Must be at least 1 (the median sender always counts); 1e6: clip only."))
    max_weight: float | None = Field(None, gt=0, description=(
        "Absolute cap on the weight (claimed batch) of any sender, on top of the median cap; None: none."))
    caught_ban_s: float = Field(600.0, ge=0, le=86_400, description=(
        "How long this peer's averagers refuse a peer caught sending a non-finite or misshapen part, or "
        "returning a non-finite result as a reducer (no honest peer sends either, and libp2p authenticates the "
        "sender): no groups, parts or state with it. 0: only the round it was caught in drops it."))


class GossipConfig(BaseModel):
    """Gradient averaging through `hivemind.Optimizer` (accumulate to a swarm batch, average, step)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["sync", "diloco"] = Field("sync", description=(
        "sync: average (compressed) gradients every swarm step, then all peers take the same AdamW step. "
        "diloco: each peer takes inner_steps AdamW steps alone, then the swarm averages the pseudo-gradients "
        "(weights at the last sync minus weights now) through the same compression and applies them with "
        "Nesterov SGD (outer_lr, outer_momentum): inner_steps times fewer rounds (node/gossip/outer.py). A diloco "
        "round is due when the reported samples reach the target, not when the peers' rates extrapolate there."))
    inner_steps: int = Field(4, ge=1, le=10_000, description=(
        "diloco: local optimizer steps between two outer steps (H). Set target_batch_size to about "
        "(expected peers) x inner_steps x (rollouts per local step)."))
    straggler_wait_s: float = Field(10.0, ge=0, le=3600, description=(
        "diloco: a round is due when every peer has reported its inner_steps (the records' samples reach the "
        "target); once this peer has waited this long for that, it is due with the peers that reported (two or "
        "more). A peer that dropped the last round, or just downloaded, reports only inner_steps later; a slow "
        "peer later than this misses the round and downloads its result."))
    outer_lr: float = Field(1.0, gt=0, le=10, description=(
        "diloco: learning rate of the outer Nesterov SGD on the averaged pseudo-gradient (1.0 without "
        "momentum moves to the peers' mean weights). Measured on the embedded model, 3 peers, H=4, 32 steps "
        "(docs/benchmarks.md): 1.0 without momentum raised held-out accuracy 0.27 -> 0.40, the paper's 0.7 "
        "with 0.9 momentum 0.27 -> 0.25-0.26: a handful of outer steps, each H AdamW steps long, overshoot."))
    outer_momentum: float = Field(0.0, ge=0, lt=1, description=(
        "diloco: Nesterov momentum of the outer SGD (0: none; see outer_lr for the measurement)."))
    target_batch_size: int = Field(384, ge=1, description=(
        "Rollouts the whole swarm accumulates per optimizer step; all peers then average and apply the same "
        "update. Set it to about (expected peers) x (rollouts per local step)."))
    target_batch_per_peer: int | None = Field(None, ge=1, description=(
        "When set, the target is this many rollouts per peer in the round instead of target_batch_size: "
        "per peer whose trusted progress record is within one epoch of the swarm's. A peer that left, or one "
        "stuck further behind (refused for sending NaN, so it can neither average nor download), then stops "
        "counting, and the others keep their update rate instead of waiting for rollouts nobody adds "
        "(docs/benchmarks.md, hostile peers). Until the records have once shown min_peers peers, at least "
        "min_peers count. Never above target_batch_size, so that extra identities cannot raise it (set that to "
        "the most peers you expect times this). A swarm of known size gets the same target either way."))
    compression: Literal["powersgd", "fp16", "none"] = Field("powersgd", description=(
        "powersgd: rank-r factors with error feedback, sent in fp16; fp16: dense half precision; "
        "none: dense fp32 (the baseline the byte ratio is measured against)."))
    wire_precision: Literal["fp32", "fp16"] = Field("fp32", description=(
        "Precision of what powersgd sends. fp16 halves the bytes, but every peer orthogonalises its own "
        "rounded copy of the averaged factor, which amplifies the rounding in weak directions: peers' "
        "updates then differ by several percent and their weights drift apart between state averages."))
    rank: int = Field(4, ge=1, le=256, description="PowerSGD rank r (a matrix m x n sends r(m + n) numbers).")
    matchmaking_time: float = Field(5.0, gt=0, le=600, description=(
        "Seconds peers wait to form an averaging group at each swarm step."))
    group_size: int | None = Field(None, ge=2, le=4096, description=(
        "Start a round as soon as this many peers joined it instead of waiting out matchmaking_time "
        "(hivemind's target_group_size). For a swarm of known size: set it to that size. Never below it: "
        "the peers beyond it form another group with another average, and the weights claims then make "
        "one group download the other's state. A round right after a dropped one can still wait for the "
        "matchmaking attempt left in flight. None: every round waits matchmaking_time."))
    averaging_timeout: float = Field(60.0, gt=0, le=3600, description=(
        "Seconds an averaging round may take before the peers give up on it and retry next step."))
    next_chunk_timeout: float = Field(10.0, gt=0, le=3600, description=(
        "Seconds a group member may go silent mid all-reduce before the others drop it (a reducer gets twice "
        "this). hivemind's default, the matchmaking time, is too short on loaded machines: a dropped reducer "
        "hands out partial averages, and the peers' weights split until the claims check repairs them."))
    load_state_timeout: float = Field(120.0, gt=0, le=3600, description="Seconds a late joiner waits for state.")
    average_state_every: int = Field(50, ge=1, description=(
        "Every N swarm steps peers also average parameters (fp16) to remove float drift; its bytes are counted."))
    peer_expiration_s: float = Field(30.0, gt=0, le=3600, description=(
        "A peer's progress record expires this long after its last report: a dead peer stops counting "
        "toward the swarm's batch after at most this time."))
    min_peers: int = Field(1, ge=1, description=(
        "Before its first step the peer waits (up to min_peers_timeout_s) until this many peers, itself "
        "included, are training. Peers that start together then never take solo steps apart."))
    min_peers_timeout_s: float = Field(120.0, ge=0, le=3600, description="Longest wait for min_peers.")
    verify_weights: bool = Field(True, description=(
        "After every update, claim a fingerprint of the weights in the DHT and compare it with the other "
        "peers' claims; a peer outvoted at an epoch downloads the swarm's state (node.gossip.consensus)."))
    weights_rtol: float = Field(1e-6, gt=0, le=0.1, description=(
        "Two fingerprints agree if they differ by at most this share of their largest component. Equal "
        "weights after fp32 averaging differ by 1e-9 to 3e-8; a round in which one peer got 98.8% of the "
        "average left it 6.5e-6 apart, and one AdamW step of the embedded model at lr 3e-5 moves a "
        "fingerprint by about 1.5e-3. Raise it with wire_precision=fp16, whose peers drift apart."))
    settle_timeout_s: float = Field(30.0, ge=0, le=3600, description=(
        "After its last step a peer waits up to this long until every other live peer claims the same "
        "weights at its epoch, downloading the swarm's state if it is behind or outvoted, and serving its "
        "own to peers that are; a split in the last round is repaired there. 0: leave at once."))
    weights_claim_ttl_s: float = Field(120.0, gt=0, le=3600, description="How long a weights claim stays in the DHT.")
    max_epoch_lead: int = Field(2, ge=0, le=1_000_000, description=(
        "How far ahead a lone progress record may be for a peer with no group at or above its epoch (the other "
        "of a pair that missed a round) to follow it. A peer that has a group (two identities at one epoch at or "
        "above its own, itself included) follows the group and ignores every lone record above it, so one "
        "identity cannot make everyone download its state (docs/security.md)."))
    group_patience_rounds: int = Field(2, ge=1, le=1_000, description=(
        "A peer whose rounds at one epoch failed this many times in a row stops counting on its group and "
        "follows a lone record ahead as a peer without a group would: a partner that cannot complete a "
        "round with it (one that sends NaN, say) must not keep it from catching up with the swarm."))
    robust: RobustConfig = Field(default_factory=RobustConfig, description=(
        "Robust aggregation inside the all-reduce: what a reducer does with parts that lie."))
    verbose: bool = Field(False, description="Log hivemind's per-step progress.")
