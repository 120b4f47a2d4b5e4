"""Power iteration: the baseline estimate of the dominant eigenvalue, one matvec per iteration."""
from __future__ import annotations

import torch
from torch import Tensor

from samscale.hessian.lanczos import random_unit_vector
from samscale.hessian.operator import LinearOperator, apply, as_operator
from samscale.hessian.results import EigenResult


def power_iteration(
    op: LinearOperator | Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
    dtype: torch.dtype = torch.float64,
    generator: torch.Generator | None = None,
    v0: Tensor | None = None,
) -> EigenResult:
    """The dominant (largest-|λ|) eigenpair by power iteration with the Rayleigh quotient as the estimate.

    Near a minimum the dominant eigenvalue of the Hessian is λ_max. Stops when the estimate changes by at most
    tol·|λ| between iterations (a heuristic: the eigenvector error can still be ~sqrt(tol)) or after `max_iter`
    matvecs. Returns an EigenResult with k = 1.
    """
    op = as_operator(op)
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    if tol < 0:
        raise ValueError(f"tol must be non-negative, got {tol}")
    if v0 is None:
        v = random_unit_vector(op.size, dtype=dtype, device=op.device, generator=generator)
    else:
        if v0.shape != (op.size,) or float(v0.norm()) == 0.0:
            raise ValueError(f"v0 must be a non-zero vector of shape ({op.size},), got shape {tuple(v0.shape)}")
        v = v0.to(device=op.device, dtype=dtype) / v0.norm()
    history: list[float] = []
    converged = False
    estimate = torch.zeros((), dtype=dtype)
    residual = torch.zeros((), dtype=dtype)
    for _ in range(max_iter):
        w = apply(op, v)
        estimate = torch.dot(v, w)
        residual = (w - estimate * v).norm()
        history.append(float(estimate))
        if len(history) > 1 and abs(history[-1] - history[-2]) <= tol * abs(history[-1]):
            converged = True
            break
        norm = w.norm()
        if float(norm) == 0.0:
            converged = True
            break
        v = w / norm
    return EigenResult(
        estimate.reshape(1).cpu(), v.reshape(-1, 1), len(history), converged, residual.reshape(1).cpu(), tuple(history)
    )
