"""Will training the configured model fit? An estimate of what it needs and a reading of what is free.

Used by `rankswarm doctor`, before any weights are loaded: the parameter count comes from the
model's config.json alone (the model is built on torch's meta device, which allocates nothing).
For P parameters of w bytes (model.dtype; "auto" is bfloat16 on CUDA, float32 on the CPU):

    weights P*w + gradients P*w + AdamW moments 2*P*w (torch keeps them in the parameters' dtype)
    + hivemind's gradient accumulators P*4 + the reference policy P*w when loss.kl_coef > 0
    + one step's activations: L*T*B*h*(34 + 5*a*T/h)*w/2 (Korthikanti et al. 2022, no recomputation)
      and the logits B*T*V*4 twice (log-softmax and its gradient)

with L layers, h the hidden size, a attention heads, V the vocabulary, B = prompts_per_step *
group_size sequences of T = min(max positions, max_new_tokens + PROMPT_ALLOWANCE) tokens. The
host also holds hivemind's averaging buffers in shared memory, 4 fp32 copies (P*16), and the
runtime itself (RUNTIME_BYTES): on a GPU they come on top in RAM, on the CPU everything adds up in
RAM. It is an estimate to catch a model that cannot fit, not a promise that one will: for the
embedded model's default training it says 1.2 GiB where the process peaked at 0.94 GiB RSS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from node.model.loading import EMBEDDED_DIR, resolve_dtype
from node.training.config import TrainConfig

PROMPT_ALLOWANCE = 64  # tokens of prompt assumed on top of max_new_tokens
HOST_BUFFER_BYTES_PER_PARAM = 16  # hivemind's averaged gradients and state copies (fp32)
RUNTIME_BYTES = 512 << 20  # Python, torch, transformers and hivemind themselves (RSS before the model)


@dataclass(frozen=True)
class MemoryNeed:
    """Estimated bytes training needs on the device and in host RAM (see the module docstring)."""

    num_params: int
    dtype: torch.dtype
    device_bytes: int
    host_bytes: int

    def on(self, device: torch.device) -> int:
        """Bytes the device itself must hold free (the CPU holds the host buffers too)."""
        return self.device_bytes + (self.host_bytes if device.type == "cpu" else 0)


def _config_value(config, *names: str, default: int = 0) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def count_parameters(path: str | None) -> tuple[int, object]:
    """(parameters, HF config) of the model at `path` (None = embedded), from its config.json alone."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = EMBEDDED_DIR if path is None else Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ValueError(f"model path {folder} has no config.json; set model.path to a folder written by "
                         "save_pretrained, or leave it unset for the embedded model")
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters()), config


def training_need(cfg: TrainConfig, device: torch.device) -> MemoryNeed:
    """Estimate what training `cfg`'s model on `device` needs (see the module docstring)."""
    num_params, config = count_parameters(cfg.model.path)
    dtype = resolve_dtype(cfg.model.dtype, device)
    width = torch.finfo(dtype).bits // 8
    layers = _config_value(config, "num_hidden_layers", "n_layer", default=1)
    hidden = _config_value(config, "hidden_size", "n_embd", default=1)
    heads = _config_value(config, "num_attention_heads", "n_head", default=1)
    vocab = _config_value(config, "vocab_size", default=1)
    tokens = min(_config_value(config, "max_position_embeddings", default=1 << 30),
                 cfg.sampling.max_new_tokens + PROMPT_ALLOWANCE)
    batch = cfg.algo.prompts_per_step * cfg.sampling.group_size
    activations = int(layers * tokens * batch * hidden * (34 + 5 * heads * tokens / hidden) * width / 2)
    logits = 2 * batch * tokens * vocab * 4
    states = num_params * (4 * width + 4 + (width if cfg.loss.kl_coef > 0 else 0))
    return MemoryNeed(num_params, dtype, states + activations + logits,
                      num_params * HOST_BUFFER_BYTES_PER_PARAM + RUNTIME_BYTES)


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


def free_memory(device: torch.device) -> tuple[int, int, str]:
    """(free bytes, total bytes, what was measured) on `device`; for the CPU the RAM this process may still use
    (MemAvailable, within a container's cgroup limit)."""
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
