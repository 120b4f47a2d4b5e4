"""LookSAM (Liu et al., CVPR 2022, "Towards Efficient and Scalable Sharpness-Aware Minimization", Algorithm 1).

Every k-th step (t = 0, k, 2k, …) is a full SAM step that also stores the part of the SAM gradient g_s orthogonal to
the clean gradient g:

    g_v = g_s − (⟨g_s, g⟩ / ‖g‖²) · g

Every other step takes one clean gradient g and steps along

    g + α · (‖g‖ / ‖g_v‖) · g_v

i.e. the stored direction rescaled to the current gradient's norm times α. Norms and inner products are global (over
every parameter with a gradient), like SAM's ascent; g and g_s are data-loss gradients (the base optimizer adds weight
decay). Before the first SAM step, or when g_v = 0, the in-between step is plain SGD.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from samscale.optim.bn import frozen_bn_stats
from samscale.optim.cheap import CheapSAM, LossFn, StepCost, gradient_pass
from samscale.optim.sam import SAM


class LookSAM(CheapSAM):
    """LookSAM with period `k` (≥ 1; k = 1 is SAM) and reuse weight `alpha` (≥ 0; the paper's default is 0.7)."""

    name = "looksam"

    def __init__(self, sam: SAM, total_steps: int, k: int, alpha: float) -> None:
        super().__init__(sam, total_steps)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"looksam: k (steps per full SAM step) must be a positive integer, got {k!r}")
        if not alpha >= 0:
            raise ValueError(f"looksam: alpha must be >= 0, got {alpha!r}")
        self.k, self.alpha = k, float(alpha)
        self.g_v: list[Tensor] | None = None  # one tensor per parameter of `self._params()`

    def _params(self) -> list[Tensor]:
        return [p for group in self.sam.param_groups for p in group["params"]]

    def _step(self, t: int, model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> StepCost:
        params = self._params()
        if t % self.k == 0:
            return self._sam_step(params, model, loss_fn, x, y)
        loss, output = gradient_pass(self.sam, model, loss_fn, x, y)
        if self.g_v is not None:
            with torch.no_grad():
                grads = [_grad(p) for p in params]
                g_norm = _norm(grads)
                v_norm = _norm(self.g_v)
                if v_norm > 0:
                    scale = self.alpha * g_norm / v_norm
                    for p, g, v in zip(params, grads, self.g_v):
                        p.grad = g.add(v, alpha=scale)
        self.sam.base_step()
        return StepCost(loss, output, 1, 1)

    def _sam_step(self, params: list[Tensor], model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> StepCost:
        """Full SAM step (as `sam_update` on one batch); the clean gradient is kept to split off g_v."""
        loss, output = gradient_pass(self.sam, model, loss_fn, x, y)
        clean = [_grad(p).clone() for p in params]
        self.sam.first_step(zero_grad=True)
        try:
            with torch.enable_grad(), frozen_bn_stats(model):
                loss_fn(model(x), y).backward()
        finally:
            self.sam.restore()
        with torch.no_grad():
            g_s = [_grad(p) for p in params]
            g_sq = sum(float(torch.sum(g * g)) for g in clean)
            dot = sum(float(torch.sum(a * g)) for a, g in zip(g_s, clean))
            coef = dot / g_sq if g_sq > 0 else 0.0
            self.g_v = [a - coef * g for a, g in zip(g_s, clean)]
        self.sam.base_step()
        return StepCost(loss, output, 2, 2)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "g_v": None if self.g_v is None else [v.clone() for v in self.g_v]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        g_v = state.get("g_v")
        self.g_v = None if g_v is None else [v.clone() for v in g_v]


def _grad(p: Tensor) -> Tensor:
    """The parameter's gradient, zeros when it has none (a parameter the loss did not reach)."""
    return p.grad if p.grad is not None else torch.zeros_like(p)


def _norm(tensors: list[Tensor]) -> float:
    return float(torch.sqrt(sum(torch.sum(t * t) for t in tensors)))
