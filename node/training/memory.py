"""How much memory a training step needs, checked before the first step, and what it did use.

`estimate_memory` adds up, for the configured model, batch and device:
  weights       the model's weights in their dtype (a KL reference copy doubles them)
  master        float32 master weights of a low-precision model (node/training/precision.py)
  gradients     float32 gradients (of the masters, from the first micro-batch to the update)
  optimizer     AdamW's two float32 moments
  swarm         hivemind's gradient accumulators (on the device); on a CPU peer also its host
                copies: averaged gradients, PowerSGD error feedback, averaged parameters
  activations   what one micro-batch's forward keeps for the backward (and a low-precision model's
                own gradients, until they are added into the masters): per token and layer about
                (6 d + 2 kv + 4 I) values in the model's dtype plus the float32 copies RMSNorm
                makes (4 d x 4 bytes); with gradient checkpointing the layer inputs, plus one
                layer's worth
  logits        one chunk of full-vocabulary logits: logit_chunk_tokens x V x 28 bytes (the float32
                log-softmax, its exponent and their gradients in the recomputing backward)
  generation    the KV cache of all rollouts at full length, plus a step's [rows, V] logits,
                log-softmax and probabilities
  update        AdamW's step: torch's multi-tensor (foreach) AdamW, the default off CUDA, holds one
                float32 temporary as large as all parameters (sqrt of the second moments); the
                fused AdamW used on CUDA holds none
Peak = weights + master + gradients + optimizer + swarm + max(activations + logits, generation, update).
It is an estimate (allocator slack, fragmentation and framework buffers come on top: the check
keeps a 10 % margin); docs/benchmarks.md compares it with measured peaks.

`check_memory` raises `MemoryPlanError` naming what to lower when the estimate does not fit
what the device has (or `memory.limit_gb`). `PeakMemory` measures a step: CUDA's peak
allocation, or on the CPU the process's peak resident set (Linux, reset per step).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from node.training.config import TrainConfig
from plumbing.errors import StartupError

log = logging.getLogger(__name__)

GB = 1e9
_LOGIT_BYTES = 28  # per token and vocabulary entry of a logits chunk (see the module docstring)
_GEN_LOGIT_BYTES = 20  # per row and vocabulary entry while sampling one token
_MARGIN = 0.9  # the estimate must fit in this share of what is available


class MemoryPlanError(StartupError, ValueError):
    """The configured step will not fit in the device's memory; the message says what to lower."""


@dataclass(frozen=True)
class ModelShape:
    num_params: int  # trainable, tied ones once
    weight_bytes: int  # all weights and buffers in their dtypes
    dtype_bytes: int  # bytes per value of the dtype the model computes in
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int  # key/value width: kv heads x head dim
    vocab: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelShape:
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        params = list({id(p): p for p in model.parameters()}.values())
        trainable = [p for p in params if p.requires_grad]
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(num_params=sum(p.numel() for p in trainable),
                   weight_bytes=sum(p.numel() * p.element_size() for p in params)
                   + sum(b.numel() * b.element_size() for b in model.buffers()),
                   dtype_bytes=trainable[0].element_size() if trainable else 4,
                   layers=config.num_hidden_layers, hidden=config.hidden_size,
                   intermediate=getattr(config, "intermediate_size", 4 * config.hidden_size),
                   kv_dim=kv_heads * head_dim, vocab=config.vocab_size)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per part of a training step's peak (see the module docstring)."""

    weights: int
    master: int
    gradients: int
    optimizer: int
    swarm: int
    activations: int
    logits: int
    generation: int
    update: int
    micro_batch: int  # rollouts per forward/backward
    tokens: int  # prompt + response tokens per rollout assumed

    @property
    def static(self) -> int:
        return self.weights + self.master + self.gradients + self.optimizer + self.swarm

    @property
    def total(self) -> int:
        return self.static + max(self.activations + self.logits, self.generation, self.update)

    def describe(self) -> str:
        parts = ", ".join(f"{f.name} {getattr(self, f.name) / GB:.2f}" for f in fields(self)
                          if f.name not in ("micro_batch", "tokens") and getattr(self, f.name))
        return (f"{self.total / GB:.2f} GB ({parts}; micro-batch of {self.micro_batch} rollouts x "
                f"{self.tokens} tokens)")


def activation_bytes(shape: ModelShape, tokens: int, checkpointing: bool) -> int:
    """What the forward of `tokens` tokens keeps for the backward (see the module docstring)."""
    per_layer = (6 * shape.hidden + 2 * shape.kv_dim + 4 * shape.intermediate) * shape.dtype_bytes \
        + 4 * shape.hidden * 4
    if checkpointing:
        return tokens * (shape.layers * shape.hidden * shape.dtype_bytes + per_layer)
    return tokens * shape.layers * per_layer


def estimate_memory(shape: ModelShape, cfg: TrainConfig, device: torch.device, *, prompt_tokens: int,
                    swarm: bool = False) -> MemoryEstimate:
    """The peak of one training step of `cfg` (see the module docstring)."""
    n, mixed = shape.num_params, shape.dtype_bytes < 4
    rollouts = cfg.algo.prompts_per_step * cfg.sampling.group_size
    mini = -(-rollouts // cfg.loss.mini_batches)
    micro = min(cfg.memory.micro_batch_size or mini, mini)
    tokens = prompt_tokens + cfg.sampling.max_new_tokens
    swarm_bytes = 0
    if swarm:
        swarm_bytes = 4 * n * (4 if device.type == "cpu" else 1)
    generation = (rollouts * tokens * shape.layers * 2 * shape.kv_dim * shape.dtype_bytes
                  + rollouts * shape.vocab * _GEN_LOGIT_BYTES)
    return MemoryEstimate(
        weights=shape.weight_bytes * (2 if cfg.loss.kl_coef > 0 else 1),
        master=4 * n if mixed else 0,
        gradients=4 * n, optimizer=8 * n, swarm=swarm_bytes,
        activations=activation_bytes(shape, micro * tokens, cfg.memory.gradient_checkpointing)
        + (shape.dtype_bytes * n if mixed else 0),
        logits=min(cfg.memory.logit_chunk_tokens, micro * cfg.sampling.max_new_tokens) * shape.vocab * _LOGIT_BYTES,
        generation=generation, update=0 if device.type == "cuda" else 4 * n, micro_batch=micro, tokens=tokens)


def available_bytes(device: torch.device) -> int:
    """Memory a step may use: CUDA's free memory plus what torch already holds there; on the CPU the
    memory this process may still take (free_memory) plus its resident set (which holds the loaded
    model)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device))
    if not Path("/proc/meminfo").is_file():
        return 0  # unknown: not checked
    return free_memory(device)[0] + resident_bytes("VmRSS")


def free_memory(device: torch.device) -> tuple[int, int, str]:
    """(free bytes, total bytes, what was measured) on `device`; for the CPU the RAM this process may
    still use: MemAvailable, within a container's memory limit (its cgroup) when it has one."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return free, total, torch.cuda.get_device_name(device)
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        info[name] = int(value.split()[0]) * 1024
    free, total, what = info["MemAvailable"], info["MemTotal"], "RAM available"
    room = _cgroup_room()
    if room is not None:
        limit, usage = room
        free, total = min(free, max(0, limit - usage)), min(total, limit)
        what = "RAM available within the memory limit (cgroup)"
    return free, total, what


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room() -> tuple[int, int] | None:
    """(limit, usage) of this process's memory cgroup (v2, then v1), None without a limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            return limit, usage
    return None


def shape_from_config(path: str | None, dtype: torch.dtype) -> ModelShape:
    """The shape of the model at `path` (None = embedded) in `dtype`, from its config.json alone: the
    model is built on torch's meta device, which allocates nothing (`rankswarm doctor` runs before
    any weights are loaded)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from node.model.loading import EMBEDDED_DIR

    folder = EMBEDDED_DIR if path is None else Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(f"model path {folder} has no config.json; set model.path to a folder written by "
                         "save_pretrained, or leave it unset for the embedded model")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return ModelShape.of(model)


def _advice(shape: ModelShape, cfg: TrainConfig, estimate: MemoryEstimate, budget: float) -> list[str]:
    """What to change, with the figure each change reaches; one entry per part that does not fit."""
    advice = []
    if estimate.static > budget:
        advice.append(f"use a smaller model (model.path): weights, gradients and optimizer state alone need "
                      f"{estimate.static / GB:.2f} GB")
        return advice
    room = budget - estimate.static
    if estimate.activations + estimate.logits > room:
        options = []
        per_rollout = activation_bytes(shape, estimate.tokens, cfg.memory.gradient_checkpointing)
        model_grads = shape.dtype_bytes * shape.num_params if shape.dtype_bytes < 4 else 0
        fixed = estimate.logits + model_grads
        fitting = int((room - fixed) // per_rollout) if room > fixed else 0
        if 1 <= fitting < estimate.micro_batch:
            options.append(f"set memory.micro_batch_size={fitting} (activations "
                           f"{fitting * per_rollout / GB:.2f} GB)")
        if not cfg.memory.gradient_checkpointing:
            ckpt = activation_bytes(shape, estimate.micro_batch * estimate.tokens, True) + model_grads
            options.append(f"set memory.gradient_checkpointing=true (activations {ckpt / GB:.2f} GB)")
        if estimate.logits > room / 4 and cfg.memory.logit_chunk_tokens > 16:
            options.append(f"set memory.logit_chunk_tokens={cfg.memory.logit_chunk_tokens // 4} "
                           f"(logits {estimate.logits / 4 / GB:.2f} GB)")
        advice.append(" or ".join(options) or "lower sampling.max_new_tokens (activations per rollout)")
    if estimate.update > room:
        advice.append(f"use a smaller model or a CUDA device: AdamW's step holds a float32 temporary as large as "
                      f"the parameters ({estimate.update / GB:.2f} GB; fused AdamW on CUDA does not)")
    if estimate.generation > room:
        rollouts = cfg.algo.prompts_per_step * cfg.sampling.group_size
        advice.append(f"lower algo.prompts_per_step x sampling.group_size ({rollouts} rollouts are generated at "
                      f"once: {estimate.generation / GB:.2f} GB) or sampling.max_new_tokens")
    return advice


def check_memory(model: torch.nn.Module, cfg: TrainConfig, device: torch.device, *, prompt_tokens: int,
                 swarm: bool = False) -> MemoryEstimate:
    """Estimate the step's peak; raise `MemoryPlanError` (what to lower) if it does not fit."""
    shape = ModelShape.of(model)
    estimate = estimate_memory(shape, cfg, device, prompt_tokens=prompt_tokens, swarm=swarm)
    budget = cfg.memory.limit_gb * GB if cfg.memory.limit_gb is not None else available_bytes(device)
    log.info("memory: a step needs about %s; %.2f GB available on %s", estimate.describe(), budget / GB, device)
    if budget and estimate.total > _MARGIN * budget:
        fixes = "; and ".join(_advice(shape, cfg, estimate, _MARGIN * budget))
        source = "memory.limit_gb" if cfg.memory.limit_gb is not None else "available"
        raise MemoryPlanError(
            f"a training step needs about {estimate.describe()}, more than {_MARGIN:.0%} of the "
            f"{budget / GB:.2f} GB {source} on {device}. To fit: {fixes}. (memory.check=false skips this check.)")
    return estimate


def resident_bytes(field: str) -> int:
    status = Path("/proc/self/status")
    if not status.is_file():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """The peak memory of a span of work: CUDA's peak allocation on a GPU, the peak resident set of
    this process on the CPU (Linux: reset through /proc/self/clear_refs; None where unavailable)."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # the peak then covers the process's lifetime

    def peak(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return resident_bytes("VmHWM") or None

