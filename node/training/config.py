"""The single-node training config: one small pydantic model per component, one root.

Load order is defaults < TOML files < `--set section.key=value` overrides
(plumbing/config_loading.py); the resolved config is written into the run directory.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from node.rewards import RewardConfig
from node.tasks import TaskConfig
from shaping import ShapingConfig

# Rank-dynamics checkpoints every 4 tokens: responses of the arithmetic task are 17-43 tokens.
_SHAPING_DEFAULTS = {"stride": 4, "window": 512}


class SamplingConfig(BaseModel):
    """How rollouts are sampled."""

    model_config = ConfigDict(extra="forbid")

    group_size: int = Field(8, ge=2, le=1024, description="Rollouts per prompt (G); GRPO needs at least 2.")
    max_new_tokens: int = Field(48, ge=1, le=32768, description="Response length cap in tokens.")
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="Sampling temperature for training rollouts.")
    max_staleness: int = Field(0, ge=0, le=1, description=(
        "Policy versions the weights that sampled a batch may be behind those it trains. 0: every batch is "
        "sampled by the current policy. 1: the next batch is sampled while this step's update is applied (on a "
        "swarm peer: while the round averages), by a copy of the weights from before it; the loss then divides "
        "by the sampler's recorded log-probs (the importance ratio, clipped). Costs one more copy of the weights "
        "(node/training/overlap.py)."))


class LossConfig(BaseModel):
    """Policy-loss settings."""

    model_config = ConfigDict(extra="forbid")

    clip_eps: float = Field(0.2, gt=0.0, lt=1.0, description="PPO ratio clip range epsilon.")
    kl_coef: float = Field(0.0, ge=0.0, description=(
        "Weight of the KL penalty to the frozen reference policy (0 disables it and the reference copy)."))
    entropy_coef: float = Field(0.0, ge=0.0, description="Weight of the entropy bonus (subtracted from the loss).")
    ppo_epochs: int = Field(1, ge=1, le=16, description=(
        "Passes over each step's rollouts. Every pass after the first (and every mini-batch after the first) "
        "sees weights the earlier updates moved, so the ratio to the sampling policy and its clip act."))
    mini_batches: int = Field(1, ge=1, le=1024, description=(
        "Updates per pass: the rollouts are shuffled and split into this many mini-batches, one optimizer "
        "update each (on a swarm peer each update contributes its rollouts to the swarm's batch)."))
    old_logprobs: Literal["recompute", "sampler"] = Field("recompute", description=(
        "Log-probs the PPO ratio divides by, both from the policy that sampled the rollouts. recompute: the "
        "training forward under the sampling weights, before the first update (ratio exactly 1 at the first "
        "update); sampler: those recorded during generation (the ratio then also corrects the sampler's "
        "numerics, e.g. bf16 with a KV cache, which alone can move it past the clip)."))


class ModelConfig(BaseModel):
    """Which policy to train and where."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="Local Hugging Face causal-LM folder; None = the embedded tiny model.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description=(
        "Dtype of the weights that generate and run the forward; auto = bfloat16 on a GPU that has it, float16 "
        "on one that does not, float32 on the CPU. Below float32, training keeps float32 master weights, "
        "gradients and optimizer state (float16 adds dynamic loss scaling)."))
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    shaping_device: Literal["policy", "cpu"] = Field("policy", description=(
        "Where ER/ERV/ERA (float64 Grams and eigen-solves of the hidden states) are computed: on the "
        "policy's device, or always on the CPU (for a GPU whose float64 is slower than the host's)."))
    chat_template: Literal["auto", "on", "off"] = Field("auto", description=(
        "Wrap each prompt as a user turn with the tokenizer's chat template (instruct models). auto: when the "
        "tokenizer has one; on: always (an error if it has none); off: raw prompts."))
    system_prompt: str | None = Field(None, description=(
        "System turn put before each prompt when the chat template is used."))


class MemoryConfig(BaseModel):
    """How a step fits in the device's memory (node/training/memory.py estimates it before the first step)."""

    model_config = ConfigDict(extra="forbid")

    micro_batch_size: int | None = Field(None, ge=1, le=65536, description=(
        "Rollouts per forward/backward; gradients accumulate over the micro-batches of an update and equal "
        "the one-batch gradient up to float rounding. None: a whole mini-batch at once."))
    logit_chunk_tokens: int = Field(256, ge=1, le=1_048_576, description=(
        "Response tokens whose full-vocabulary logits exist at once when log-probs and entropies are "
        "computed (recomputed in the backward): memory is this x vocabulary x 4 bytes x about 3."))
    gradient_checkpointing: bool = Field(False, description=(
        "Recompute each decoder layer's activations in the backward instead of keeping them (about a third "
        "more compute, activations of one layer instead of all)."))
    check: bool = Field(True, description=(
        "Before the first step, estimate the step's peak memory on the device and stop with what to lower "
        "if it does not fit."))
    limit_gb: float | None = Field(None, gt=0, le=100_000, description=(
        "Memory the estimate must fit in, in GB (1e9 bytes); None: what the device has free (CUDA) or the "
        "machine's available memory (CPU). Set it to plan for a smaller GPU."))


class OptimConfig(BaseModel):
    """AdamW settings. The embedded model is destroyed by learning rates above about 1e-4."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(3e-5, gt=0.0, le=1e-2, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas.")
    grad_clip: float = Field(1.0, gt=0.0, description="Max global gradient norm.")


class AlgoConfig(BaseModel):
    """The RL algorithm around the loss."""

    model_config = ConfigDict(extra="forbid")

    estimator: Literal["grpo", "dr_grpo", "rloo"] = Field("grpo", description="Base advantage estimator.")
    prompts_per_step: int = Field(16, ge=1, le=4096, description=(
        "Prompts sampled per step (each gets group_size rollouts)."))


class EvalConfig(BaseModel):
    """Held-out evaluation; the set is fixed by the task and disjoint from training prompts."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(10, ge=0, description="Evaluate every N steps (0 = only at start and end).")
    num_problems: int = Field(200, ge=1, description="Held-out problems evaluated.")
    pass_k: int = Field(0, ge=0, description="k for pass@k (0 = greedy accuracy only).")
    num_samples: int = Field(8, ge=1, description="Samples per problem for pass@1/pass@k estimates.")


class CheckpointConfig(BaseModel):
    """When checkpoints are written and how many are kept."""

    model_config = ConfigDict(extra="forbid")

    every: int = Field(50, ge=0, description="Save every N steps (0 = only at the end).")
    keep: int = Field(3, ge=1, description="Newest checkpoints kept on disk.")
    resume: bool = Field(True, description="Resume from the newest valid checkpoint in run_dir if one exists.")


class TrainConfig(BaseModel):
    """Everything `rankswarm train` needs."""

    model_config = ConfigDict(extra="forbid")

    run_dir: str = Field("runs/train", description="Outputs: metrics.jsonl, checkpoints/, config.resolved.json.")
    seed: int = Field(0, description="Seeds prompts, sampling and initialisation.")
    steps: int = Field(200, ge=0, description="Training steps to run (a resumed run continues up to this step).")
    max_minutes: float | None = Field(None, gt=0, description="Stop after this wall-clock time even before `steps`.")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (None = torch default).")
    progress: bool = Field(True, description="Print a live progress line per step.")
    model: ModelConfig = ModelConfig()
    task: TaskConfig = Field(default_factory=lambda: TaskConfig.model_validate({"type": "arithmetic"}))
    reward: RewardConfig = RewardConfig()
    sampling: SamplingConfig = SamplingConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    algo: AlgoConfig = AlgoConfig()
    shaping: ShapingConfig = ShapingConfig(**_SHAPING_DEFAULTS)
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    memory: MemoryConfig = MemoryConfig()

    @field_validator("shaping", mode="before")
    @classmethod
    def _task_sized_shaping(cls, value: object) -> object:
        # A partial [shaping] table or `--set shaping.x=...` is validated on its own, so without
        # this it would fall back to ShapingConfig's reference stride 40, which leaves the short
        # arithmetic responses with no velocity checkpoint (ERV/ERA silently missing).
        if isinstance(value, dict):
            return {**_SHAPING_DEFAULTS, **value}
        return value

    @field_validator("run_dir")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("run_dir must be a non-empty path")
        return value
