"""Cheaper SAM variants as per-step rules around a `SAM` optimizer: which steps pay for a second gradient.

Each variant decides, step by step, how the update direction is obtained, and always steps through the wrapped SAM's
base optimizer (so momentum, weight decay, the LR schedule and pruning masks act exactly as for SGD and SAM):

* ``LateSAM`` (late_sam): plain SGD steps until a set fraction of training, then full SAM steps;
* ``RandomSAM`` (random_sam): each step is SAM with a scheduled probability, otherwise SGD (RST, Zhao et al. 2022);
* ``LookSAM`` (looksam, `samscale.optim.looksam`) and ``MomentumSAM`` (momentum_sam, `samscale.optim.momentum_sam`).

`update(model, loss_fn, x, y)` performs one step and returns a `StepCost` with its loss, outputs and the number of
forward–backward passes it took (`grad_evals`) and how many of them had to run one after the other
(`sequential_grad_evals`). The step counter (and any random stream) is part of `state_dict`, so a resumed run
continues bit-identically. docs/PROTOCOL.md §"Cheap SAM variants" states how ambiguous published details are read.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from samscale.optim.msharpness import sam_update
from samscale.optim.sam import SAM

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class StepCost:
    """One optimizer step's mean clean loss and outputs (detached), and the gradient evaluations it cost."""

    loss: Tensor
    output: Tensor
    grad_evals: int
    sequential_grad_evals: int


def gradient_pass(sam: SAM, model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """One forward–backward at the current weights into freshly zeroed ``.grad``; the detached loss and outputs."""
    sam.zero_grad(set_to_none=True)
    with torch.enable_grad():
        output = model(x)
        loss = loss_fn(output, y)
        loss.backward()
    return loss.detach(), output.detach()


def sgd_step(sam: SAM, model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> StepCost:
    """One clean forward–backward and a base-optimizer step at the unperturbed weights (an SGD step)."""
    loss, output = gradient_pass(sam, model, loss_fn, x, y)
    sam.base_step()
    return StepCost(loss, output, 1, 1)


def sam_step(sam: SAM, model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> StepCost:
    """One full SAM step (clean pass, ascent, perturbed pass, restore, base step): two sequential passes."""
    loss, output = sam_update(model, loss_fn, x, y, sam)
    return StepCost(loss, output, 2, 2)


class CheapSAM:
    """A per-step rule around `sam`; subclasses implement `_step(t, model, loss_fn, x, y)` for step index t (from 0)."""

    name = "cheap"

    def __init__(self, sam: SAM, total_steps: int) -> None:
        if not isinstance(sam, SAM):
            raise ValueError(f"{self.name} wraps a samscale SAM optimizer, got {type(sam).__name__}")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"{self.name}: total_steps must be a positive integer, got {total_steps!r}")
        self.sam = sam
        self.total_steps = total_steps
        self.steps = 0

    def update(self, model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> StepCost:
        """Take step number `self.steps` and count it."""
        cost = self._step(self.steps, model, loss_fn, x, y)
        self.steps += 1
        return cost

    def _step(self, t: int, model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> StepCost:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The variant's own state (the base optimizer's lives in the SAM optimizer's state_dict)."""
        return {"name": self.name, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()` of the same variant."""
        if state.get("name") != self.name:
            raise ValueError(f"state of variant {state.get('name')!r} cannot be loaded into {self.name!r}")
        self.steps = int(state["steps"])


class LateSAM(CheapSAM):
    """SGD for steps t < int(start · total_steps), SAM from then on (start = 0: SAM throughout; 1: SGD)."""

    name = "late_sam"

    def __init__(self, sam: SAM, total_steps: int, start: float) -> None:
        super().__init__(sam, total_steps)
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"late_sam: start must be a fraction of training in [0, 1], got {start!r}")
        self.first_sam_step = int(start * total_steps)

    def _step(self, t: int, model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> StepCost:
        step = sam_step if t >= self.first_sam_step else sgd_step
        return step(self.sam, model, loss_fn, x, y)


class RandomSAM(CheapSAM):
    """Step t is SAM when u_t < p(t), else SGD; u_t ~ U[0, 1) from a seeded generator, one draw per step.

    p(t) = p_start + (p_end − p_start) · t / max(total_steps − 1, 1): constant when p_end = p_start, linear otherwise
    (RST's constant and linear schedules).
    """

    name = "random_sam"

    def __init__(self, sam: SAM, total_steps: int, p_start: float, p_end: float | None, seed: int) -> None:
        super().__init__(sam, total_steps)
        p_end = p_start if p_end is None else p_end
        for label, p in (("p_start", p_start), ("p_end", p_end)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"random_sam: {label} must be a probability in [0, 1], got {p!r}")
        self.p_start, self.p_end = float(p_start), float(p_end)
        self.generator = torch.Generator().manual_seed(seed)

    def probability(self, t: int) -> float:
        """The probability that step t is a SAM step."""
        return self.p_start + (self.p_end - self.p_start) * t / max(self.total_steps - 1, 1)

    def _step(self, t: int, model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> StepCost:
        u = float(torch.rand((), generator=self.generator, dtype=torch.float64))
        step = sam_step if u < self.probability(t) else sgd_step
        return step(self.sam, model, loss_fn, x, y)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])
