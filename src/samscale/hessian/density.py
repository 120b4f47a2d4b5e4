"""Stochastic Lanczos quadrature (SLQ): the eigenvalue density of H and its spectral moments tr(H^k)/P.

Each run starts Lanczos from a normalized Rademacher probe v; the eigenvalues θ_j of the tridiagonal T_m and the
squared first components τ_j of its eigenvectors form a Gauss quadrature rule with vᵀg(H)v ≈ Σ_j τ_j g(θ_j), exact
for polynomials g of degree ≤ 2m − 1. Averaged over probes this estimates tr(g(H))/P (Ghorbani et al., 2019).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from samscale.hessian.lanczos import LanczosProcess
from samscale.hessian.operator import LinearOperator, as_operator
from samscale.hessian.results import Estimate
from samscale.hessian.trace import mean_and_standard_error, rademacher


class SpectralDensity(NamedTuple):
    """A smoothed eigenvalue density on a grid, with the quadrature nodes and weights it was built from.

    `nodes` and `weights` are lists (one tensor per run) because a run stops early when its Krylov space is invariant.
    """

    grid: Tensor
    density: Tensor
    nodes: list[Tensor]
    weights: list[Tensor]


def quadrature(
    op: LinearOperator | Tensor,
    *,
    n_runs: int,
    n_steps: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[list[Tensor], list[Tensor]]:
    """Gauss quadrature nodes θ and weights τ (summing to 1) from `n_runs` Lanczos runs of `n_steps` steps each."""
    op = as_operator(op)
    if n_runs < 1:
        raise ValueError(f"n_runs must be at least 1, got {n_runs}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    steps = min(n_steps, op.size)
    all_nodes, all_weights = [], []
    for _ in range(n_runs):
        probe = rademacher(op.size, dtype=dtype, device=op.device, generator=generator)
        process = LanczosProcess(op, probe, steps)
        process.run()
        theta, s = torch.linalg.eigh(process.tridiagonal())
        all_nodes.append(theta)
        all_weights.append(s[0] ** 2)
    return all_nodes, all_weights


def slq_moments(
    op: LinearOperator | Tensor,
    ks: Iterable[int] = (1, 2, 3, 4),
    *,
    n_runs: int = 20,
    n_steps: int = 20,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> dict[int, Estimate]:
    """Estimates of the normalized spectral moments tr(H^k)/P, each with a standard error over the `n_runs` probes.

    The quadrature is exact per probe for k ≤ 2·n_steps − 1, so the only error is the probe (Hutchinson) noise.
    """
    orders = [int(k) for k in ks]
    if not orders or any(k < 0 for k in orders):
        raise ValueError(f"ks must be non-negative integers, got {orders}")
    if n_runs < 2:
        raise ValueError(f"n_runs must be at least 2 to report a standard error, got {n_runs}")
    nodes, weights = quadrature(op, n_runs=n_runs, n_steps=n_steps, generator=generator, dtype=dtype)
    return {
        k: mean_and_standard_error([float((w * theta**k).sum()) for theta, w in zip(nodes, weights)]) for k in orders
    }


def spectral_density(
    op: LinearOperator | Tensor,
    n_runs: int = 10,
    n_steps: int = 80,
    grid: Tensor | None = None,
    sigma: float | None = None,
    *,
    n_grid: int = 1000,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> SpectralDensity:
    """The eigenvalue density of H by SLQ, broadened by a Gaussian of width `sigma`, normalized to integrate to 1.

    Default `sigma` is 1% of the span of the quadrature nodes; default `grid` has `n_grid` points covering the nodes
    with a margin of 5σ. The normalization uses the trapezoid rule on the grid, so mass outside a user grid is dropped.
    """
    nodes, weights = quadrature(op, n_runs=n_runs, n_steps=n_steps, generator=generator, dtype=dtype)
    theta = torch.cat(nodes)
    tau = torch.cat(weights) / n_runs
    span = float(theta.max() - theta.min())
    if sigma is None:
        sigma = 0.01 * span if span > 0 else 0.01 * max(float(theta.abs().max()), 1.0)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if grid is None:
        if n_grid < 2:
            raise ValueError(f"n_grid must be at least 2, got {n_grid}")
        grid = torch.linspace(float(theta.min()) - 5 * sigma, float(theta.max()) + 5 * sigma, n_grid, dtype=dtype)
    grid = grid.to(torch.float64)
    if grid.ndim != 1 or grid.numel() < 2 or not bool((grid[1:] > grid[:-1]).all()):
        raise ValueError("grid must be a strictly increasing 1-D tensor with at least 2 points")
    kernel = torch.exp(-0.5 * ((grid[:, None] - theta[None, :]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = kernel @ tau
    mass = torch.trapezoid(density, grid)
    if float(mass) <= 0:
        raise ValueError(f"the grid [{float(grid[0])}, {float(grid[-1])}] misses the spectrum; widen it")
    return SpectralDensity(grid, density / mass, nodes, weights)
