"""Mixed precision: float32 masters under a low-precision model.

- a float32 model is its own master (it trains exactly as before);
- a bfloat16 model's gradients reach float32 masters, and updates too small for a bfloat16 weight
  accumulate there instead of vanishing (the reason the masters exist);
- float16 gets loss scaling: an overflow skips the update and halves the scale;
- checkpoints hold the masters and restore them exactly, under the model's names.
"""

import pytest
import torch

from node.training.checkpoint import load_checkpoint, save_checkpoint
from node.training.config import OptimConfig
from node.training.precision import MasterWeights
from node.training.seams import LocalUpdate, build_adamw

pytestmark = pytest.mark.unit


class Tied(torch.nn.Module):
    """An embedding and a head sharing one weight, like the embedded model."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(10, 4).to(dtype)
        self.norm = torch.nn.LayerNorm(4).to(dtype)
        self.head = torch.nn.Linear(4, 10, bias=False).to(dtype)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.norm(self.embed(ids)))


def _loss(model, ids: torch.Tensor | None = None):
    ids = torch.tensor([1, 2, 3]) if ids is None else ids
    return model(ids).float().logsumexp(-1).mean()


def test_a_float32_model_is_its_own_master():
    model = Tied(torch.float32)
    master = MasterWeights(model)
    assert not master.mixed and master.loss_scale == 1.0
    assert all(m is p for m, p in zip(master.params, model.parameters()))
    assert len(master.params) == 3  # the tied weight once


def test_bfloat16_gradients_accumulate_into_float32_masters():
    model = Tied(torch.bfloat16)
    master = MasterWeights(model)
    assert master.mixed and all(p.dtype == torch.float32 for p in master.params)
    for _ in range(2):  # two micro-batches
        master.scale(_loss(model)).backward()
        grads = [p.grad.float().clone() for p in master.model_params]
        master.accumulate_grads()
        assert all(p.grad is None for p in master.model_params)  # freed: accumulation is in float32
    assert all(torch.allclose(m.grad, 2 * g) for m, g in zip(master.params, grads))


def test_updates_below_half_a_bfloat16_ulp_accumulate_in_the_masters():
    """AdamW's first steps move each weight by about lr; 1e-3 is under half the bf16 spacing at 1.0 (3.9e-3)."""
    def train(master_weights: bool) -> torch.Tensor:
        layer = torch.nn.Linear(4, 4, bias=False).to(torch.bfloat16)
        torch.nn.init.ones_(layer.weight)
        master = MasterWeights(layer) if master_weights else None
        params = master.params if master is not None else list(layer.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
        for _ in range(10):
            layer(torch.ones(2, 4, dtype=torch.bfloat16)).float().sum().backward()
            if master is not None:
                master.accumulate_grads()
            optimizer.step()
            optimizer.zero_grad()
            if master is not None:
                master.push_to_model()
        return layer.weight.detach().float()

    assert torch.all(train(master_weights=False) == 1.0)  # every step rounded away
    assert torch.all(train(master_weights=True) < 0.995)  # ten steps of 1e-3 landed


def test_float16_overflow_skips_the_update_and_halves_the_scale():
    model = Tied(torch.float16)
    master = MasterWeights(model)
    update = LocalUpdate(master, build_adamw(master.params, OptimConfig(lr=1e-2)), grad_clip=1.0)
    scale = master.loss_scale
    assert scale > 1.0 and all(m is not p for m, p in zip(master.params, master.model_params))
    before = [p.detach().clone() for p in master.params]
    master.scale(_loss(model) * 1e4).backward()  # overflows float16 once scaled
    master.accumulate_grads()
    report = update.apply(1)
    assert not report.applied and report.skipped == "non-finite gradient"
    assert master.loss_scale == scale / 2
    assert all(torch.equal(a, b) for a, b in zip(before, master.params))
    master.scale(_loss(model)).backward()
    master.accumulate_grads()
    assert update.apply(1).applied
    # the gradient was unscaled on its way into the masters: the model moved by about lr, not lr x scale
    moved = max(float((a - b).detach().abs().max()) for a, b in zip(before, master.params))
    assert 1e-3 < moved < 0.05


def test_checkpoints_hold_the_masters_under_the_model_names(tmp_path):
    model = Tied(torch.bfloat16)
    master = MasterWeights(model)
    optimizer = build_adamw(master.params, OptimConfig(lr=1e-3))
    with torch.no_grad():
        for p in master.params:
            p.add_(1e-4)  # below bf16 resolution: only the masters know
    master.push_to_model()
    saved = {k: v.clone() for k, v in master.state_dict().items()}
    assert set(saved) == set(model.state_dict()) and all(v.dtype == torch.float32 for v in saved.values())
    save_checkpoint(tmp_path, 1, master, optimizer, {})

    other = MasterWeights(Tied(torch.bfloat16))
    load_checkpoint(tmp_path / "step_00000001", other, build_adamw(other.params, OptimConfig()))
    for name, value in other.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert torch.equal(other.model.head.weight, model.head.weight)  # the model holds their rounding


def test_the_swarm_averages_only_float32_parameters():
    """hivemind's PowerSGD and fp16 codec fail on bfloat16 gradients: the swarm is handed the masters."""
    from node.gossip.averaging import GradientGossip
    from node.gossip.config import GossipConfig

    low = [torch.nn.Parameter(torch.zeros(4, 4, dtype=torch.bfloat16))]
    with pytest.raises(ValueError, match="float32 masters"):
        GradientGossip(None, low, torch.optim.AdamW, GossipConfig(), run_id="x", batch_size_per_step=1,
                       identity=None)
