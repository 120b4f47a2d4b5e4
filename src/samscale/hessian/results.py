"""Result records shared by the spectral algorithms: eigen-estimates and Monte Carlo estimates."""
from __future__ import annotations

from typing import NamedTuple

import torch


class EigenResult(NamedTuple):
    """Eigenpairs found by an iterative method, with the work it took.

    `eigenvalues` (k,) come most-wanted first (descending for the largest algebraic ones), `eigenvectors` is P×k with
    unit columns, `residuals` (k,) estimates ‖Hy − θy‖ per pair, and `history` the leading estimate after each matvec.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    n_matvec: int
    converged: bool
    residuals: torch.Tensor
    history: tuple[float, ...]


class Estimate(NamedTuple):
    """A Monte Carlo estimate and its standard error (sample standard deviation / sqrt(number of samples))."""

    estimate: float
    standard_error: float
