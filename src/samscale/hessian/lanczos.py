"""Lanczos iteration with full reorthogonalization: extreme eigenpairs of a symmetric operator from few matvecs."""
from __future__ import annotations

import torch
from torch import Tensor

from samscale.hessian.objective import check_choice
from samscale.hessian.operator import LinearOperator, apply, as_operator
from samscale.hessian.results import EigenResult

WHICH = ("LA", "SA", "LM")


def random_unit_vector(
    size: int, *, dtype: torch.dtype, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> Tensor:
    """A standard-normal vector scaled to unit norm (drawn on the CPU so a seeded generator is device-independent)."""
    v = torch.randn(size, dtype=dtype, generator=generator)
    return (v / v.norm()).to(device)


REORTHOGONALIZE_AGAIN = 2 ** -0.5
"""A second Gram–Schmidt pass runs when the first shrank the vector below this fraction of its norm (the
Daniel–Gragg–Kaufman–Stewart criterion: "twice is enough", and once is enough when little cancelled)."""


def orthogonalize(vector: Tensor, basis: Tensor) -> Tensor:
    """`vector` with its components along the orthonormal rows of `basis` removed: classical Gram–Schmidt, repeated
    once when cancellation made the first pass inexact. Each pass reads the whole basis twice, which dominates the
    cost of long Lanczos runs on large models, so the second is done only when needed."""
    before = vector.norm()
    vector = vector - basis.T @ (basis @ vector)
    if vector.norm() < REORTHOGONALIZE_AGAIN * before:
        vector = vector - basis.T @ (basis @ vector)
    return vector


class LanczosProcess:
    """The Lanczos three-term recurrence, one matvec per `step`, building an orthonormal Krylov basis Q and the
    tridiagonal T = QᵀAQ. Every new vector is reorthogonalized against all previous ones (full reorthogonalization,
    `orthogonalize`), which keeps Q orthonormal to working precision and prevents ghost eigenvalues."""

    def __init__(self, op: LinearOperator, start: Tensor, max_steps: int) -> None:
        self.op = op
        self.dtype = start.dtype
        self.basis = torch.empty(max_steps, op.size, dtype=start.dtype, device=op.device)
        self.alphas: list[float] = []
        self.betas: list[float] = []  # betas[j] couples basis vectors j and j+1
        self.basis[0] = start.to(op.device) / start.norm()
        self.steps = 0
        self.residual: Tensor | None = None

    def step(self) -> float:
        """Apply the operator to the newest basis vector and extend T by one row; returns the new off-diagonal β."""
        j = self.steps
        q = self.basis[j]
        w = apply(self.op, q)
        alpha = torch.dot(q, w)
        w = w - alpha * q
        if j > 0:
            w = w - self.betas[j - 1] * self.basis[j - 1]
        w = orthogonalize(w, self.basis[: j + 1])
        self.alphas.append(float(alpha))
        self.steps += 1
        self.residual = w
        return float(w.norm())

    def run(self) -> None:
        """Step until the basis is full or the Krylov space is invariant (β ≈ 0: T's quadrature is then exact)."""
        while True:
            beta = self.step()
            scale = max([abs(a) for a in self.alphas] + self.betas + [beta])
            if self.steps == self.basis.shape[0] or beta <= 1e-10 * scale:
                return
            self.extend(beta, self.residual / beta)

    def extend(self, beta: float, next_vector: Tensor) -> None:
        """Append the next basis vector (the normalized residual, or a fresh orthogonal vector when β = 0)."""
        self.betas.append(beta)
        self.basis[self.steps] = next_vector

    def tridiagonal(self) -> Tensor:
        """T_m = QᵀAQ for the m steps taken so far (float64)."""
        m = self.steps
        t = torch.diag(torch.tensor(self.alphas, dtype=torch.float64))
        if m > 1:
            off = torch.tensor(self.betas[: m - 1], dtype=torch.float64)
            t += torch.diag(off, 1) + torch.diag(off, -1)
        return t

    def orthogonal_random(self, generator: torch.Generator | None) -> Tensor | None:
        """A random unit vector orthogonal to the current basis, or None if the basis spans the whole space."""
        known = self.basis[: self.steps]
        for _ in range(3):
            v = random_unit_vector(self.op.size, dtype=self.dtype, device=self.op.device, generator=generator)
            v = orthogonalize(orthogonalize(v, known), known)  # a random start may lie almost inside the basis
            norm = v.norm()
            if norm > 1e-8:
                return v / norm
        return None


def _select(theta: Tensor, k: int, which: str) -> Tensor:
    if which == "LA":
        return torch.argsort(theta, descending=True)[:k]
    if which == "SA":
        return torch.argsort(theta)[:k]
    return torch.argsort(theta.abs(), descending=True)[:k]


def lanczos(
    op: LinearOperator | Tensor,
    k: int = 5,
    *,
    max_iter: int | None = None,
    tol: float = 1e-6,
    which: str = "LA",
    dtype: torch.dtype = torch.float64,
    generator: torch.Generator | None = None,
    v0: Tensor | None = None,
) -> EigenResult:
    """The k extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalization.

    `which`: "LA" largest algebraic (returned in descending order), "SA" smallest algebraic (ascending), "LM" largest
    magnitude (by decreasing |λ|). Stops when every wanted Ritz pair has residual ‖Ay − θy‖ = β_m|s_m| ≤ tol·|θ|
    (|θ| floored at 1% of the largest Ritz magnitude, so near-zero eigenvalues are judged on the operator's scale),
    or after `max_iter` matvecs (default min(P, max(100, 10k))). Vectors are kept in `dtype`; the starting vector is
    `v0` or a seeded Gaussian. If the Krylov space becomes invariant, it restarts with a fresh orthogonal vector.
    """
    op = as_operator(op)
    size = op.size
    check_choice("which", which, WHICH)
    if not 1 <= k <= size:
        raise ValueError(f"k must be between 1 and the operator size {size}, got {k}")
    if max_iter is None:
        max_iter = min(size, max(100, 10 * k))
    if not k <= max_iter:
        raise ValueError(f"max_iter must be at least k={k}, got {max_iter}")
    max_iter = min(max_iter, size)
    if tol < 0:
        raise ValueError(f"tol must be non-negative, got {tol}")
    if v0 is None:
        start = random_unit_vector(size, dtype=dtype, device=op.device, generator=generator)
    else:
        if v0.shape != (size,) or float(v0.norm()) == 0.0:
            raise ValueError(f"v0 must be a non-zero vector of shape ({size},), got shape {tuple(v0.shape)}")
        start = v0.to(device=op.device, dtype=dtype)

    process = LanczosProcess(op, start, max_iter)
    history: list[float] = []
    converged = False
    while True:
        beta = process.step()
        theta, s = torch.linalg.eigh(process.tridiagonal())
        chosen = _select(theta, k, which)
        residuals = beta * s[-1, chosen].abs()
        history.append(float(theta[chosen[0]]))
        scale = theta.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
        floor = theta[chosen].abs().clamp_min(1e-2 * scale)
        if process.steps >= k and bool((residuals <= tol * floor).all()):
            converged = True
            break
        if process.steps == max_iter:
            converged = process.steps == size
            break
        if beta <= 1e-10 * float(scale):
            fresh = process.orthogonal_random(generator)
            if fresh is None:
                converged = process.steps >= k
                break
            process.extend(0.0, fresh)
        else:
            process.extend(beta, process.residual / beta)

    eigenvalues = theta[chosen].to(dtype)
    ritz = process.basis[: process.steps].T @ s[:, chosen].to(device=op.device, dtype=dtype)
    ritz = ritz / ritz.norm(dim=0, keepdim=True)
    return EigenResult(eigenvalues, ritz, process.steps, converged, residuals.to(dtype), tuple(history))
