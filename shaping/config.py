"""`ShapingConfig`: every option of VERL advantage shaping (verl-method.md sections 3-5)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ReferenceCompatConfig(BaseModel):
    """Switches reproducing the reference implementation where our spec deliberately differs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    zero_short_dynamics: bool = Field(False, description=(
        "Responses too short for 2 velocities get ERV = ERA = 0 (reference) instead of no value (ours)."))
    zero_start_baselines: bool = Field(False, description=(
        "Baselines start at 0 without bias correction (reference) instead of bias-corrected EMA (ours)."))
    last_token_bonus: bool = Field(False, description=(
        "Add the shaping bonus at the last response token only (reference) instead of every token (ours)."))


class ShapingConfig(BaseModel):
    """VERL shaping: rank-dynamics checkpoints, baselines, the ERA gate and the advantage bonus."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description=(
        "Shape advantages with r_aux; off = plain GRPO (statistics still computed)."))
    stride: int = Field(40, ge=1, le=100_000, description=(
        "Tokens between rank checkpoints (reference 40; 2-8 for short tasks)."))
    window: int = Field(512, ge=2, le=1_000_000, description="Rank dynamics use the last `window` response positions.")
    alpha: float = Field(0.3, gt=0.0, le=1.0, description="EMA weight of the newest batch mean in each baseline.")
    gamma: float = Field(2.0, ge=0.0, le=100.0, description="ERA gate sharpness: g = sigmoid(gamma * d_ERA).")
    kappa: float = Field(2.0, gt=0.0, description="The bonus never exceeds |A0| / kappa.")
    lam: float = Field(1.0, ge=0.0, le=100.0, description="Scale lambda of the auxiliary signal.")
    lambda_mode: Literal["fixed", "performance"] = Field(
        "fixed",
        description="fixed: lambda_t = lam; performance: lam * (1 - s_bar) with s_bar the score EMA in [0, 1].")
    score_min: float = Field(0.0, description="Task score mapped to 0 for the performance-scaled lambda.")
    score_max: float = Field(1.0, description="Task score mapped to 1 for the performance-scaled lambda.")
    gate_mode: Literal["era", "fixed"] = Field("era", description="era: gate from ERA; fixed: g = 0.5 (ablation).")
    channel_mode: Literal["gated", "both"] = Field(
        "gated", description="gated: w = g w_explore + (1-g) w_exploit; both: both channels at weight 1 (ablation).")
    w_explore: tuple[float, float, float] = Field((0.0, 0.0, 1.0), description=(
        "Exploration channel weights over (ERA, ERV, ER)."))
    w_exploit: tuple[float, float, float] = Field((0.0, 1.0, 0.0), description=(
        "Exploitation channel weights over (ERA, ERV, ER)."))
    compat: ReferenceCompatConfig = Field(default_factory=ReferenceCompatConfig,
                                          description="Reference-implementation compatibility switches.")

    @model_validator(mode="after")
    def _check_score_range(self) -> ShapingConfig:
        if self.score_max <= self.score_min:
            raise ValueError(f"shaping.score_max ({self.score_max}) must exceed shaping.score_min ({self.score_min})")
        return self

    @classmethod
    def reference(cls, **overrides) -> ShapingConfig:
        """The reference VERL settings with every compatibility switch on."""
        settings = dict(stride=40, window=512, alpha=0.3, gamma=2.0, kappa=2.0, lam=1.0, lambda_mode="fixed",
                        compat=ReferenceCompatConfig(zero_short_dynamics=True, zero_start_baselines=True,
                                                     last_token_bonus=True))
        settings.update(overrides)
        return cls(**settings)
