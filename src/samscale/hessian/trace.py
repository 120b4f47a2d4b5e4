"""Hutchinson estimators: tr(H) from Rademacher probes zᵀHz, and ‖H‖_F from ‖Hz‖² (Hutchinson on H²)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from samscale.hessian.operator import LinearOperator, apply, as_operator
from samscale.hessian.results import Estimate


def rademacher(
    size: int, *, dtype: torch.dtype, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> Tensor:
    """A vector of independent ±1 entries (drawn on the CPU so a seeded generator is device-independent)."""
    signs = torch.randint(0, 2, (size,), generator=generator).to(dtype) * 2 - 1
    return signs.to(device)


def mean_and_standard_error(samples: list[float]) -> Estimate:
    """Sample mean and its standard error (unbiased standard deviation / sqrt(n))."""
    values = torch.tensor(samples, dtype=torch.float64)
    if len(samples) < 2:
        raise ValueError(f"need at least 2 samples for a standard error, got {len(samples)}")
    return Estimate(float(values.mean()), float(values.std(unbiased=True) / math.sqrt(len(samples))))


def _probe_values(op: LinearOperator | Tensor, n_samples: int, generator, dtype, statistic) -> list[float]:
    op = as_operator(op)
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2, got {n_samples}")
    values = []
    for _ in range(n_samples):
        z = rademacher(op.size, dtype=dtype, device=op.device, generator=generator)
        values.append(float(statistic(z, apply(op, z))))
    return values


def hutchinson_trace(
    op: LinearOperator | Tensor,
    n_samples: int = 100,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Estimate:
    """Unbiased estimate of tr(H) as the mean of zᵀHz over Rademacher probes z, with its standard error."""
    return mean_and_standard_error(_probe_values(op, n_samples, generator, dtype, lambda z, hz: torch.dot(z, hz)))


def frobenius_norm(
    op: LinearOperator | Tensor,
    n_samples: int = 100,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Estimate:
    """Estimate of ‖H‖_F = sqrt(tr(H²)) from ‖Hz‖² over Rademacher probes (the square root is slightly biased low);
    the standard error is propagated by the delta method, se(‖H‖_F) ≈ se(tr H²) / (2‖H‖_F)."""
    squared = mean_and_standard_error(_probe_values(op, n_samples, generator, dtype, lambda z, hz: torch.dot(hz, hz)))
    norm = math.sqrt(max(squared.estimate, 0.0))
    error = squared.standard_error / (2 * norm) if norm > 0 else 0.0
    return Estimate(norm, error)
