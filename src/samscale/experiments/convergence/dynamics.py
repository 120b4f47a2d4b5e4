"""Stochastic USAM / SAM on non-linear interpolating problems written as residuals of a flat parameter vector.

f(w) = (1/2n) Σ_i r_i(w)², r_i = prediction − target; f* = 0 when the model can interpolate. Along the trajectory the
full loss f and ‖∇f‖² are recorded, so the PL ratio ‖∇f‖²/(2(f − f*)) — whose minimum is the empirical μ — can be
read off. β̂ = max_i ‖∇r_i(w)‖² is the top eigenvalue of ∇²f_i = ∇r_i∇r_iᵀ + r_i∇²r_i where the residual vanishes.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call

from samscale.data.synthetic import teacher_student_problem
from samscale.models.regression import two_layer

Residuals = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class FlatProblem:
    """n examples whose residuals r_idx(w) (prediction − target) depend on the flat float64 parameters w."""

    name: str
    n: int
    params: Tensor
    residuals: Residuals

    def loss(self, w: Tensor, idx: Tensor | None = None) -> Tensor:
        """(1/2|idx|) Σ_{i ∈ idx} r_i(w)²; all examples when idx is None."""
        idx = torch.arange(self.n) if idx is None else idx
        r = self.residuals(w, idx)
        return (r * r).mean() / 2


@dataclass(frozen=True)
class Trajectory:
    """Full-data loss f and ‖∇f‖² at the recorded iterations."""

    steps: list[int]
    loss: list[float]
    grad_sq: list[float]
    final_params: Tensor

    def pl_ratios(self, optimum: float = 0.0, floor: float = 1e-20) -> list[float]:
        """‖∇f‖²/(2(f − f*)) at each recorded point with f − f* above `floor` (PL holds with μ = their minimum)."""
        return [g / (2 * (f - optimum)) for f, g in zip(self.loss, self.grad_sq) if f - optimum > floor]


def _loss_and_grad(problem: FlatProblem, w: Tensor, idx: Tensor | None) -> tuple[Tensor, Tensor]:
    w = w.detach().requires_grad_(True)
    loss = problem.loss(w, idx)
    (grad,) = torch.autograd.grad(loss, w)
    return loss.detach(), grad


def run_flat(
    problem: FlatProblem,
    *,
    eta: float,
    rho: float,
    batch_size: int,
    n_steps: int,
    record_every: int,
    normalized: bool,
    generator: torch.Generator,
) -> Trajectory:
    """w ← w − η∇f_ξ(w + ρ·e) with e = ∇f_ξ(w) (USAM) or ∇f_ξ(w)/‖∇f_ξ(w)‖ (SAM), ξ a uniform batch of B distinct
    examples; f and ‖∇f‖² recorded every `record_every` steps and at the end."""
    if not (isinstance(batch_size, int) and 1 <= batch_size <= problem.n):
        raise ValueError(f"batch_size must be an integer in [1, n={problem.n}], got {batch_size!r}")
    if not (eta > 0 and rho >= 0 and n_steps >= 1 and record_every >= 1):
        raise ValueError(f"need eta > 0, rho ≥ 0, n_steps ≥ 1, record_every ≥ 1; got {eta}, {rho}, {n_steps}, "
                         f"{record_every}")
    w = problem.params.clone()
    steps, losses, grad_sq = [], [], []

    def record(t: int) -> None:
        loss, grad = _loss_and_grad(problem, w, None)
        steps.append(t)
        losses.append(float(loss))
        grad_sq.append(float(grad @ grad))

    for t in range(n_steps):
        if t % record_every == 0:
            record(t)
            if not math.isfinite(losses[-1]):
                break
        idx = torch.randperm(problem.n, generator=generator)[:batch_size]
        _, ascent = _loss_and_grad(problem, w, idx)
        if normalized:
            norm = float(ascent.norm())
            ascent = ascent / norm if norm > 0 else ascent
        _, grad = _loss_and_grad(problem, w + rho * ascent, idx)
        w = w - eta * grad
    else:
        record(n_steps)
    return Trajectory(steps, losses, grad_sq, w)


def per_example_smoothness(problem: FlatProblem, w: Tensor) -> float:
    """β̂ = max_i ‖∇r_i(w)‖²: the top eigenvalue of each example's Hessian at an interpolating point (Gauss–Newton)."""
    largest = 0.0
    for i in range(problem.n):
        point = w.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(problem.residuals(point, torch.tensor([i])).sum(), point)
        largest = max(largest, float(grad @ grad))
    return largest


def network_problem(name: str, model: torch.nn.Module, x: Tensor, y: Tensor) -> FlatProblem:
    """The residuals model(x_i) − y_i of a scalar-output network as a function of its flattened parameters (the
    model's own parameters are the start and are not modified); float64 throughout."""
    model = model.double()
    named = list(model.named_parameters())
    names, shapes, sizes = [n for n, _ in named], [p.shape for _, p in named], [p.numel() for _, p in named]
    flat = torch.cat([p.detach().flatten() for _, p in named])
    x, y = x.to(torch.float64), y.to(torch.float64).reshape(-1)

    def residuals(w: Tensor, idx: Tensor) -> Tensor:
        params = {n: piece.view(shape) for n, piece, shape in zip(names, w.split(sizes), shapes)}
        return functional_call(model, params, (x[idx],)).reshape(-1) - y[idx]

    return FlatProblem(name, len(y), flat, residuals)


def predict(problem_model: torch.nn.Module, w: Tensor, x: Tensor) -> Tensor:
    """The network's outputs (flattened) at inputs x with its parameters replaced by the flat vector w."""
    named = list(problem_model.named_parameters())
    sizes, shapes = [p.numel() for _, p in named], [p.shape for _, p in named]
    params = {n: piece.view(shape) for (n, _), piece, shape in zip(named, w.split(sizes), shapes)}
    return functional_call(problem_model, params, (x.to(w.dtype),)).reshape(-1)


def mlp_problem(n: int, d: int, width: int, teacher_width: int, seed: int) -> FlatProblem:
    """A two-layer ReLU student of `width` on n noise-free teacher–student examples (x ∈ R^d), float64."""
    generator = torch.Generator().manual_seed(seed)
    data = teacher_student_problem(d, teacher_width, n, 1, 0.0, generator)
    return network_problem(f"MLP width {width}", two_layer(width, d, generator=generator), data.x, data.y)


def factorization_problem(rows: int, cols: int, true_rank: int, rank: int, init_scale: float,
                          seed: int) -> FlatProblem:
    """Fully observed matrix factorization: M = U*V*ᵀ/√r (rows × cols, rank `true_rank`), fitted by UVᵀ with
    factors of `rank` columns; each observed entry is one example, r_(i,j) = u_iᵀv_j − M_ij."""
    if rank < true_rank:
        raise ValueError(f"rank {rank} < true_rank {true_rank}: the factorization could not interpolate")
    generator = torch.Generator().manual_seed(seed)
    u_star = torch.randn(rows, true_rank, generator=generator, dtype=torch.float64)
    v_star = torch.randn(cols, true_rank, generator=generator, dtype=torch.float64)
    target = (u_star @ v_star.T / math.sqrt(true_rank)).flatten()
    start = init_scale * torch.randn((rows + cols) * rank, generator=generator, dtype=torch.float64)

    def residuals(w: Tensor, idx: Tensor) -> Tensor:
        u, v = w[: rows * rank].view(rows, rank), w[rows * rank:].view(cols, rank)
        return (u[idx // cols] * v[idx % cols]).sum(dim=1) - target[idx]

    return FlatProblem(f"factorization rank {rank}", rows * cols, start, residuals)
