"""Hutchinson estimators: tr(H) from Rademacher probes zᵀHz, and ‖H‖_F from ‖Hz‖² (Hutchinson on H²)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from samscale.hessian.lanczos import LanczosProcess, random_unit_vector
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
    deflate: int = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Estimate:
    """Unbiased estimate of tr(H) as the mean of zᵀHz over Rademacher probes z, with its standard error.

    `deflate` = m > 0 first runs m Lanczos steps from a random vector, giving an orthonormal Krylov basis V with
    VᵀHV = T, and splits tr(H) = tr(T) + tr(PHP) with P = I − VVᵀ: the first part is exact, the second is
    estimated from projected probes Pz (unbiased for any V). The Krylov space soon holds the few outlying
    eigendirections that dominate a network Hessian's ‖H‖_F, which is what Hutchinson's variance 2Σ_{i≠j}H_ij²
    is made of, so the same accuracy takes far fewer products (the idea of Hutch++, Meyer et al., 2021).
    Costs m + n_samples products.
    """
    if not (isinstance(deflate, int) and deflate >= 0):
        raise ValueError(f"deflate must be a non-negative number of Lanczos steps, got {deflate!r}")
    op = as_operator(op)
    if deflate == 0:
        return mean_and_standard_error(_probe_values(op, n_samples, generator, dtype, lambda z, hz: torch.dot(z, hz)))
    basis, exact = krylov_basis(op, min(deflate, op.size), generator, dtype)
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2, got {n_samples}")
    values = []
    for _ in range(n_samples):
        z = rademacher(op.size, dtype=dtype, device=op.device, generator=generator)
        z = z - basis.T @ (basis @ z)
        values.append(float(torch.dot(z, apply(op, z))))
    rest = mean_and_standard_error(values)
    return Estimate(exact + rest.estimate, rest.standard_error)


def krylov_basis(
    op: LinearOperator, steps: int, generator: torch.Generator | None, dtype: torch.dtype
) -> tuple[Tensor, float]:
    """An orthonormal basis V (steps × P) of the Krylov space of a random start, and tr(VᵀHV) (= Σ α_j)."""
    process = LanczosProcess(op, random_unit_vector(op.size, dtype=dtype, device=op.device, generator=generator), steps)
    process.run()
    return process.basis[: process.steps], float(sum(process.alphas))


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
