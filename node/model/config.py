"""Configs of the embedded tiny model: its shape (`TinyModelConfig`) and the SFT warm-up that trained it.

Light on purpose: importing them never pulls in torch or transformers (tests/test_light_configs.py).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from node.tasks.arithmetic import ArithmeticTaskConfig


class TinyModelConfig(BaseModel):
    """Shape of the embedded model. The defaults are what `node/model/embedded/` ships."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(128, ge=8, le=4096, description="Residual width d.")
    num_layers: int = Field(4, ge=1, le=64, description="Transformer blocks.")
    num_heads: int = Field(4, ge=1, le=64, description="Attention heads (must divide hidden_size).")
    num_kv_heads: int = Field(4, ge=1, le=64, description="Key/value heads (must divide num_heads).")
    intermediate_size: int = Field(384, ge=8, le=16384, description="SwiGLU hidden width.")
    max_positions: int = Field(256, ge=16, le=32768, description="Longest prompt + response in tokens.")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base.")
    seed: int = Field(0, description="Seeds the weight initialisation.")


class WarmupConfig(BaseModel):
    """The SFT warm-up that produces node/model/embedded/."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seeds the data stream (the model has its own seed in `model`).")
    model: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Shape of the model.")
    task: ArithmeticTaskConfig = Field(default_factory=ArithmeticTaskConfig, description="What it learns.")
    max_steps: int = Field(3000, ge=1, le=1_000_000, description="Upper bound on optimizer steps.")
    batch_size: int = Field(64, ge=1, le=4096, description="Problems per step.")
    lr: float = Field(3e-3, gt=0, le=1.0, description="Peak AdamW learning rate (linear warm-up, then flat).")
    lr_warmup_steps: int = Field(50, ge=0, description="Steps of linear learning-rate warm-up.")
    weight_decay: float = Field(0.0, ge=0, le=1.0, description="AdamW weight decay.")
    eval_every: int = Field(25, ge=1, description="Steps between validation checks of the stopping rule.")
    val_size: int = Field(200, ge=1, le=10_000, description="Validation problems for the stopping rule.")
    target_accuracy: float = Field(0.35, ge=0, le=1, description="Stop once validation greedy accuracy reaches this.")
    eval_problems: int = Field(500, ge=1, description="Held-out (task eval pool) problems for the final report.")
    threads: int = Field(2, ge=1, le=256, description="torch intra-op threads (fixes the reduction order).")
