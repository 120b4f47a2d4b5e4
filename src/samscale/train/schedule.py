"""Learning-rate schedules as multipliers of the base lr, indexed by optimizer step (the authors' convention)."""
from __future__ import annotations

import bisect
import math
from typing import Callable

from samscale.spec.run import ScheduleSpec


def step_boundaries(milestones: list[float], epochs: int, steps_per_epoch: int) -> list[int]:
    """Optimizer steps at which a step schedule decays: int(E·f·steps_per_epoch) for each fraction f."""
    return [int(epochs * fraction * steps_per_epoch) for fraction in milestones]


def lr_multiplier(spec: ScheduleSpec, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base lr for 0-based optimizer step `step` (step schedules decay once step >= boundary)."""
    total = epochs * steps_per_epoch
    warmup = int(spec.warmup_epochs * steps_per_epoch)

    def warm(step: int) -> float:
        return (step + 1) / warmup if step < warmup else 1.0

    if spec.kind == "constant":
        return warm
    if spec.kind == "step":
        boundaries = step_boundaries(spec.milestones, epochs, steps_per_epoch)
        return lambda step: warm(step) * spec.gamma ** bisect.bisect_right(boundaries, step)
    if spec.kind == "cosine":
        span = max(total - warmup, 1)
        return lambda step: warm(step) * 0.5 * (1.0 + math.cos(math.pi * min(max(step - warmup, 0), span) / span))
    raise ValueError(f"unknown schedule kind {spec.kind!r}; valid: step, cosine, constant")
