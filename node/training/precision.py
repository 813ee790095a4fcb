"""Mixed precision: low-precision weights generate and run the forward, float32 master weights learn.

A model loaded in bfloat16 or float16 keeps those weights for sampling and for the training
forward/backward. Every trainable parameter below float32 gets a float32 master copy here;
the optimizer (AdamW alone, or hivemind.Optimizer in a swarm) sees only the masters, so its
state and the gradients the swarm averages are float32, and an update smaller than half a
bfloat16 ulp (most of them at lr 3e-5) accumulates in the master instead of vanishing. After
each backward the low-precision gradients are added into the masters' float32 `.grad`
(`accumulate_grads`); after each change of the masters the model is refreshed from them
(`push_to_model`). A float32 parameter is its own master: a float32 model trains exactly as
without this class.

float16 gradients underflow, so a float16 model also gets dynamic loss scaling: the loss is
multiplied by `loss_scale` before the backward, the gradients are divided by it on their
way into the masters, and a non-finite gradient halves the scale (the update is skipped by
the caller's clip-or-skip); every `growth_interval` finite updates double it.
"""

from __future__ import annotations

import torch


class MasterWeights:
    """float32 master parameters for a model's trainable parameters (tied ones counted once)."""

    def __init__(self, model: torch.nn.Module, *, growth_interval: int = 1000):
        self.model = model
        unique = {id(p): p for p in model.parameters() if p.requires_grad}
        self.model_params: list[torch.nn.Parameter] = list(unique.values())
        fp16 = any(p.dtype == torch.float16 for p in self.model_params)
        # with loss scaling every gradient needs unscaling on its way in: even float32 ones get a master
        self.params: list[torch.nn.Parameter] = [
            p if p.dtype == torch.float32 and not fp16 else torch.nn.Parameter(p.detach().to(torch.float32).clone())
            for p in self.model_params]
        self.mixed = any(m is not p for m, p in zip(self.params, self.model_params))
        self.loss_scale = 2.0 ** 16 if fp16 else 1.0
        self.growth_interval = growth_interval
        self._good_updates = 0

    @property
    def model_dtype(self) -> torch.dtype:
        """The dtype the model computes in (that of its first trainable parameter)."""
        return self.model_params[0].dtype if self.model_params else torch.float32

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate (multiplied by the loss scale for a float16 model)."""
        return loss * self.loss_scale if self.loss_scale != 1.0 else loss

    @torch.no_grad()
    def accumulate_grads(self) -> None:
        """Add the model's gradients into the masters' float32 `.grad` and free the model's.

        Called after every micro-batch's backward, so gradients accumulate in float32, not in the
        model's dtype. For a float32 parameter without loss scaling there is nothing to do."""
        for master, param in zip(self.params, self.model_params):
            if master is param or param.grad is None:
                continue
            grad = param.grad.to(torch.float32)
            if self.loss_scale != 1.0:
                grad.div_(self.loss_scale)
            if master.grad is None:
                master.grad = grad
            else:
                master.grad.add_(grad)
            param.grad = None

    def after_update(self, finite: bool) -> None:
        """Adjust the loss scale after an update attempt: halve it on a non-finite gradient."""
        if self.loss_scale == 1.0:
            return
        if not finite:
            self.loss_scale = max(self.loss_scale / 2.0, 1.0)
            self._good_updates = 0
            return
        self._good_updates += 1
        if self._good_updates % self.growth_interval == 0:
            self.loss_scale = min(self.loss_scale * 2.0, 2.0 ** 24)

    @torch.no_grad()
    def push_to_model(self) -> None:
        """Copy the masters into the model's low-precision weights (after an update or a download)."""
        if not self.mixed:
            return
        for master, param in zip(self.params, self.model_params):
            if master is not param:
                param.copy_(master)

    # -- checkpoints: the masters under the model's state-dict names ------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict with every parameter replaced by its float32 master."""
        master_of = {id(p): m for p, m in zip(self.model_params, self.params)}
        return {name: master_of.get(id(value), value).detach()
                for name, value in self.model.state_dict(keep_vars=True).items()}

    @torch.no_grad()
    def load_state_dict(self, weights: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Load `weights` (as `state_dict` writes them) into the masters and the model."""
        self.model.load_state_dict(weights, strict=strict)  # casts into the model's dtype
        master_of = {id(p): m for p, m in zip(self.model_params, self.params)}
        for name, value in self.model.state_dict(keep_vars=True).items():
            master = master_of.get(id(value))
            if master is not None and master is not value and name in weights:
                master.copy_(weights[name])
