"""Momentum-SAM (Becker et al. 2024, "Momentum-SAM: Sharpness Aware Minimization without Computational Overhead").

The ascent follows the base SGD optimizer's momentum buffer instead of a fresh gradient, so each step takes ONE
forward–backward pass, at the perturbed point:

    ε = ρ · v / ‖v‖₂          v: torch SGD's momentum buffer (μ·v + g + λw, the accumulated descent direction)
    g_s = ∇L(w + ε);   w ← base step from w with g_s

torch's buffer accumulates +gradients (w ← w − lr·v), so +v is the ascent direction the paper writes as −v with its
velocity convention. Before the first step the buffer does not exist and the step is plain SGD. The norm is global
over every parameter that has a buffer. The loss and outputs reported are those of the perturbed pass (there is no
clean pass), and BatchNorm running statistics are updated by that pass (it is the step's only pass).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from samscale.optim.cheap import CheapSAM, LossFn, StepCost, gradient_pass, sgd_step
from samscale.optim.sam import SAM


class MomentumSAM(CheapSAM):
    """Momentum-SAM around a SAM optimizer whose base is torch.optim.SGD with momentum > 0; ρ is each group's."""

    name = "momentum_sam"

    def __init__(self, sam: SAM, total_steps: int) -> None:
        super().__init__(sam, total_steps)
        base = sam.base_optimizer
        if not isinstance(base, torch.optim.SGD) or any(g["momentum"] <= 0 for g in base.param_groups):
            raise ValueError("momentum_sam needs an SGD base optimizer with momentum > 0 (its buffer is the ascent)")

    def _step(self, t: int, model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> StepCost:
        state = self.sam.base_optimizer.state
        groups = [(group["rho"], [(p, state[p]["momentum_buffer"]) for p in group["params"]
                                  if state.get(p, {}).get("momentum_buffer") is not None])
                  for group in self.sam.param_groups]
        buffers = [v for _, pairs in groups for _, v in pairs]
        if not buffers:
            return sgd_step(self.sam, model, loss_fn, x, y)
        saved: list[tuple[Tensor, Tensor]] = []
        with torch.no_grad():
            norm = float(torch.sqrt(sum(torch.sum(v * v) for v in buffers)))
            for rho, pairs in groups:
                for p, v in pairs:
                    saved.append((p, p.detach().clone()))
                    p.add_(v, alpha=rho / (norm + self.sam.norm_eps))
        try:
            loss, output = gradient_pass(self.sam, model, loss_fn, x, y)
        finally:
            with torch.no_grad():
                for p, w in saved:
                    p.copy_(w)  # bit-exact: w was copied aside, ε is never subtracted
        self.sam.base_step()
        return StepCost(loss, output, 1, 1)
