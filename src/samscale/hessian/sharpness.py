"""Loss-landscape sharpness: worst-case max_{‖δ‖≤ρ} L(w+δ) − L(w) and average-case E_δ L(w+δ) − L(w).

Both evaluate the model functionally at w + δ, so the model's weights are never written to.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from samscale.hessian.lanczos import random_unit_vector
from samscale.hessian.objective import Batch, LossFn, Objective, as_batches
from samscale.hessian.results import Estimate
from samscale.hessian.trace import mean_and_standard_error


def _chunks(batches: list[Batch], m: int | None) -> list[list[Batch]]:
    """The data as given (m = None), or re-cut into consecutive single-batch chunks of m examples."""
    if m is None:
        return [batches]
    if not (isinstance(m, int) and m >= 1):
        raise ValueError(f"m must be a positive integer or None, got {m!r}")
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    return [[(x[i : i + m], y[i : i + m])] for i in range(0, x.shape[0], m)]


def _ascend(objective: Objective, rho: float, steps: int, step_size: float, generator) -> float:
    """Projected normalized gradient ascent on δ ↦ f(w+δ) − f(w) over the ball ‖δ‖ ≤ ρ; the best value found."""
    w = objective.point
    base = objective.value(w)
    best = 0.0
    delta = torch.zeros_like(w)
    for _ in range(steps):
        g = objective.gradient(w + delta)
        norm = g.norm()
        if float(norm) == 0.0:
            if float(delta.norm()) > 0:
                break  # a stationary point inside the ball
            g = random_unit_vector(w.numel(), dtype=w.dtype, device=w.device, generator=generator)
            norm = g.norm()
        delta = delta + step_size * g / norm
        radius = delta.norm()
        if float(radius) > rho:
            delta = delta * (rho / radius)
        best = max(best, float(objective.value(w + delta) - base))
    return best


def worst_case_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batch | Iterable[Batch],
    rho: float,
    steps: int = 20,
    m: int | None = None,
    *,
    step_size: float | None = None,
    bn_mode: str = "eval",
    dtype: torch.dtype | None = None,
    params: Iterable[str | nn.Parameter] | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """max_{‖δ‖₂≤ρ} L(w+δ) − L(w), approximated from below by `steps` of projected normalized gradient ascent.

    Each step is δ ← Π_ρ(δ + α·∇L(w+δ)/‖∇L(w+δ)‖) with α = `step_size` (default ρ); the first direction is the
    gradient at w, or a random direction from `generator` if that gradient is zero. The largest increase seen is
    returned (≥ 0). With `m`, the examples are cut into consecutive chunks of m (m-sharpness): each chunk gets its own
    δ and the result is the chunk-size-weighted mean. For a quadratic with zero gradient the exact value is ½ρ²λ_max.
    """
    if not rho > 0:
        raise ValueError(f"rho must be positive, got {rho}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    alpha = rho if step_size is None else step_size
    if not alpha > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    total, count = 0.0, 0
    for chunk in _chunks(as_batches(batches), m):
        objective = Objective(model, loss_fn, chunk, bn_mode=bn_mode, dtype=dtype, params=params)
        total += objective.n_examples * _ascend(objective, rho, steps, alpha, generator)
        count += objective.n_examples
    return total / count


def average_case_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batch | Iterable[Batch],
    sigma: float,
    n_samples: int = 20,
    *,
    bn_mode: str = "eval",
    dtype: torch.dtype | None = None,
    params: Iterable[str | nn.Parameter] | None = None,
    generator: torch.Generator | None = None,
) -> Estimate:
    """E_{δ~N(0,σ²I)} L(w+δ) − L(w) by Monte Carlo over `n_samples` Gaussian perturbations, with its standard error.

    For a quadratic with Hessian H this is ½σ²·tr(H) (plus zero-mean gradient terms).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    objective = Objective(model, loss_fn, batches, bn_mode=bn_mode, dtype=dtype, params=params)
    w = objective.point
    base = objective.value(w)
    increases = []
    for _ in range(n_samples):
        delta = torch.randn(w.numel(), dtype=w.dtype, generator=generator).to(w.device) * sigma
        increases.append(float(objective.value(w + delta) - base))
    return mean_and_standard_error(increases)
