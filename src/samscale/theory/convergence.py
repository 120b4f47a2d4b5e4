"""Linear convergence of stochastic USAM under interpolation, per-example β-smoothness and μ-PL (docs/PROTOCOL.md §6).

With κ = β/μ, ρ < 1/(β√κ) and η = (1 − ρβ√κ)/(βκ(1 + ρβ)²):
E[f(x_{t+1}) − f*] ≤ (1 − (1 − ρβ√κ)²/(κ²(1 + ρβ)²)) · E[f(x_t) − f*]; at ρ = 0 the rate is SGD's 1 − μ²/β².
The testbed is least squares f(x) = (1/2n)‖Xx − y‖², interpolating when n < d.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from torch import Tensor


class LeastSquaresConstants(NamedTuple):
    """β = max_i ‖a_i‖² (smoothness of every f_i) and μ = PL constant of f (smallest non-zero eigenvalue of XXᵀ/n)."""

    beta: float
    mu: float


def _condition_number(beta: float, mu: float) -> float:
    if not (beta > 0 and mu > 0):
        raise ValueError(f"beta and mu must be positive, got beta={beta}, mu={mu}")
    if mu > beta * (1 + 1e-12):
        raise ValueError(f"mu must not exceed beta (κ = β/μ ≥ 1), got beta={beta}, mu={mu}")
    return beta / mu


def _check_radius(beta: float, kappa: float, rho: float) -> None:
    limit = 1.0 / (beta * math.sqrt(kappa))
    if not 0 <= rho < limit:
        raise ValueError(f"rho must lie in [0, 1/(β√κ)) = [0, {limit:.6g}) for the guarantee, got {rho}")


def usam_step_size(beta: float, mu: float, rho: float) -> float:
    """The step size η = (1 − ρβ√κ)/(βκ(1 + ρβ)²) under which the USAM rate holds (ρ < 1/(β√κ), κ = β/μ)."""
    kappa = _condition_number(beta, mu)
    _check_radius(beta, kappa, rho)
    return (1 - rho * beta * math.sqrt(kappa)) / (beta * kappa * (1 + rho * beta) ** 2)


def usam_rate(beta: float, mu: float, rho: float) -> float:
    """Per-iteration contraction of E[f − f*]: 1 − (1 − ρβ√κ)²/(κ²(1 + ρβ)²), valid for ρ < 1/(β√κ)."""
    kappa = _condition_number(beta, mu)
    _check_radius(beta, kappa, rho)
    return 1 - (1 - rho * beta * math.sqrt(kappa)) ** 2 / (kappa**2 * (1 + rho * beta) ** 2)


def least_squares_constants(features: Tensor) -> LeastSquaresConstants:
    """β and μ for f_i(x) = ½(a_iᵀx − y_i)² and f = (1/n)Σ f_i, where the rows of `features` (n × d) are the a_i.

    ∇²f_i = a_i a_iᵀ has top eigenvalue ‖a_i‖², so β = max_i ‖a_i‖². The residual r = Xx − y moves in range(X), where
    ‖∇f‖² = rᵀXXᵀr/n² ≥ λ⁺(XXᵀ)‖r‖²/n², i.e. ½‖∇f‖² ≥ (λ⁺(XXᵀ)/n)(f − f*): μ = λ⁺(XXᵀ/n), the smallest eigenvalue
    above the numerical-rank threshold max(n, d)·ε·λ_max.
    """
    if features.ndim != 2 or min(features.shape) == 0:
        raise ValueError(f"features must be a non-empty n × d matrix, got shape {tuple(features.shape)}")
    x = features.to(torch.float64)
    n = x.shape[0]
    beta = float((x * x).sum(dim=1).max())
    eigenvalues = torch.linalg.eigvalsh(x @ x.T / n)
    threshold = max(x.shape) * torch.finfo(torch.float64).eps * float(eigenvalues.max())
    nonzero = eigenvalues[eigenvalues > threshold]
    if nonzero.numel() == 0:
        raise ValueError("features are all zero: no PL constant")
    return LeastSquaresConstants(beta, float(nonzero.min()))


def run_usam_least_squares(
    features: Tensor,
    targets: Tensor,
    *,
    eta: float,
    rho: float,
    n_steps: int,
    batch_size: int = 1,
    x0: Tensor | None = None,
    generator: torch.Generator | None = None,
    n_runs: int = 1,
) -> Tensor:
    """Stochastic USAM on f(x) = (1/2n)‖Xx − y‖²; returns f(x_t) − f* for t = 0..n_steps (float64).

    Step on a batch ξ (B distinct examples, uniformly drawn): x ← x − η∇f_ξ(x + ρ∇f_ξ(x)). f* is attained by the
    least-squares solution; x0 defaults to zero. With `n_runs` > 1, that many independent runs (own batches, same
    x0) are simulated at once and the mean gap over them is returned, an estimate of E[f(x_t) − f*].
    """
    return _run_least_squares(features, targets, eta, rho, n_steps, batch_size, x0, generator, n_runs,
                              normalized=False)


def run_sam_least_squares(
    features: Tensor,
    targets: Tensor,
    *,
    eta: float,
    rho: float,
    n_steps: int,
    batch_size: int = 1,
    x0: Tensor | None = None,
    generator: torch.Generator | None = None,
    n_runs: int = 1,
) -> Tensor:
    """Stochastic normalized SAM on the same least squares: x ← x − η∇f_ξ(x + ρ∇f_ξ(x)/‖∇f_ξ(x)‖), the ascent
    a fixed length ρ (zero where ∇f_ξ = 0). Not covered by the USAM rate; returns f(x_t) − f* like
    `run_usam_least_squares` (mean over `n_runs`), with the same batches for the same generator state."""
    return _run_least_squares(features, targets, eta, rho, n_steps, batch_size, x0, generator, n_runs,
                              normalized=True)


def _run_least_squares(
    features: Tensor,
    targets: Tensor,
    eta: float,
    rho: float,
    n_steps: int,
    batch_size: int,
    x0: Tensor | None,
    generator: torch.Generator | None,
    n_runs: int,
    *,
    normalized: bool,
) -> Tensor:
    n, d = _problem_shape(features, targets, batch_size)
    if not (isinstance(n_runs, int) and n_runs >= 1):
        raise ValueError(f"n_runs must be a positive integer, got {n_runs!r}")
    if not eta > 0 or not rho >= 0:
        raise ValueError(f"need eta > 0 and rho ≥ 0, got eta={eta}, rho={rho}")
    a = features.to(torch.float64)
    y = targets.to(torch.float64)
    start = torch.zeros(d, dtype=torch.float64) if x0 is None else x0.to(torch.float64)
    # one run keeps x as a vector (plain matrix-vector products are several times faster for tiny problems); several
    # runs are the rows of x, each with its own batch
    x = start.clone() if n_runs == 1 else start.expand(n_runs, d).clone()

    def loss(points: Tensor) -> Tensor:
        return ((points @ a.T - y) ** 2).mean(dim=-1) / 2

    def batch_gradient(a_b: Tensor, y_b: Tensor, point: Tensor) -> Tensor:
        if point.ndim == 1:
            return a_b.T @ (a_b @ point - y_b) / batch_size
        residual = (a_b @ point.unsqueeze(2)).squeeze(2) - y_b
        return (a_b.transpose(1, 2) @ residual.unsqueeze(2)).squeeze(2) / batch_size

    solution = torch.linalg.lstsq(a, y.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    optimum = loss(solution)
    losses = [loss(x)]
    for _ in range(n_steps):
        if n_runs == 1:
            batch = torch.randperm(n, generator=generator)[:batch_size]
        else:
            batch = torch.rand(n_runs, n, generator=generator).argsort(dim=1)[:, :batch_size]
        a_b, y_b = a[batch], y[batch]  # (B, d), (B,) — or (runs, B, d), (runs, B)
        ascent = batch_gradient(a_b, y_b, x)
        if normalized:
            norms = ascent.norm(dim=-1, keepdim=True)
            ascent = torch.where(norms > 0, ascent / norms.clamp_min(torch.finfo(torch.float64).tiny), ascent)
        x = x - eta * batch_gradient(a_b, y_b, x + rho * ascent)
        losses.append(loss(x))
    gaps = torch.stack(losses) - optimum
    return gaps if n_runs == 1 else gaps.mean(dim=1)


MAX_BATCHES = 20_000  # batches enumerated by `expected_usam_gaps`; C(n, B) above this is refused


def usam_rate_formula(beta: float, mu: float, rho: float) -> float:
    """The value of 1 − (1 − ρβ√κ)²/(κ²(1 + ρβ)²) for any ρ ≥ 0, also beyond 1/(β√κ), where the theorem promises
    nothing: what a bound that ignored the radius condition would claim."""
    kappa = _condition_number(beta, mu)
    if not rho >= 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    return 1 - (1 - rho * beta * math.sqrt(kappa)) ** 2 / (kappa**2 * (1 + rho * beta) ** 2)


def expected_usam_gaps(
    features: Tensor, targets: Tensor, *, eta: float, rho: float, n_steps: int, batch_size: int = 1,
    x0: Tensor | None = None,
) -> Tensor:
    """Exact E[f(x_t) − f*], t = 0..n_steps, of stochastic USAM on an interpolating least squares (float64).

    With y = Xx̂ on every example, a step on batch ξ (B distinct examples, each of the C(n, B) batches equally
    likely) maps e = x − x̂ to M_ξ e, M_ξ = I − ηH_ξ − ηρH_ξ², H_ξ = A_ξᵀA_ξ/B; so P_t = E[e_t e_tᵀ] follows
    P_{t+1} = E_ξ[M_ξ P_t M_ξᵀ] and E[f(x_t) − f*] = ½ tr(H P_t), H = XᵀX/n. Everything lives in the row space of
    X (rank r ≤ n), where it is computed; the rest of e never moves and never counts. No sampling: the expectation
    the theorem bounds, to round-off, at every step.
    """
    n, d = _problem_shape(features, targets, batch_size)
    if not (eta > 0 and rho >= 0 and isinstance(n_steps, int) and n_steps >= 0):
        raise ValueError(f"need eta > 0, rho ≥ 0 and an integer n_steps ≥ 0, got {eta}, {rho}, {n_steps!r}")
    if math.comb(n, batch_size) > MAX_BATCHES:
        raise ValueError(f"C(n={n}, B={batch_size}) = {math.comb(n, batch_size)} batches exceed {MAX_BATCHES}; "
                         "the exact expectation enumerates them all")
    a, y = features.to(torch.float64), targets.to(torch.float64)
    solution = torch.linalg.lstsq(a, y.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    residual = float((a @ solution - y).abs().max())
    if residual > 1e-8 * max(1.0, float(y.abs().max())):
        raise ValueError(f"the problem does not interpolate (largest residual {residual:.3g}); the exact expectation "
                         "needs y = Xx̂ on every example")
    _, singular, vh = torch.linalg.svd(a, full_matrices=False)
    basis = vh[singular > max(n, d) * torch.finfo(torch.float64).eps * singular[0]].T  # (d, r), row space of X
    start = torch.zeros(d, dtype=torch.float64) if x0 is None else x0.to(torch.float64)
    e = basis.T @ (start - solution)
    rows = a @ basis  # (n, r): the examples in the row-space coordinates
    batches = torch.tensor(list(itertools.combinations(range(n), batch_size)))
    h_batch = torch.einsum("kbi,kbj->kij", rows[batches], rows[batches]) / batch_size  # (K, r, r)
    eye = torch.eye(len(e), dtype=torch.float64)
    steps = eye - eta * h_batch - eta * rho * h_batch @ h_batch  # M_ξ for every batch
    h = rows.T @ rows / n
    moment = torch.outer(e, e)
    gaps = [0.5 * float((h * moment).sum())]
    for _ in range(n_steps):
        moment = (steps @ moment @ steps.transpose(1, 2)).mean(dim=0)
        gaps.append(0.5 * float((h * moment).sum()))
        if not math.isfinite(gaps[-1]):  # overflowed: the expectation diverges
            gaps += [math.inf] * (n_steps + 1 - len(gaps))
            break
    return torch.tensor(gaps, dtype=torch.float64)


def bound_check(gaps: Tensor, rate: float) -> tuple[bool, float, int]:
    """(holds, worst, step): whether gap_t ≤ rate^t · gap_0 at every step t (to a relative 1e-9 for round-off), the
    largest gap_t / (rate^t gap_0), and the first step where the bound fails (−1 if none). Non-finite gaps fail."""
    gaps = torch.as_tensor(gaps, dtype=torch.float64)
    if not (len(gaps) >= 1 and gaps[0] > 0):
        raise ValueError("need gaps starting positive")
    allowed = gaps[0] * torch.tensor(float(rate), dtype=torch.float64) ** torch.arange(len(gaps), dtype=torch.float64)
    ratios = torch.where(allowed > 0, gaps / allowed, torch.where(gaps > 0, math.inf, 0.0))
    ratios = torch.where(torch.isnan(ratios), math.inf, ratios)
    failed = (ratios > 1 + 1e-9).nonzero()
    return len(failed) == 0, float(ratios.max()), int(failed[0]) if len(failed) else -1


def fit_contraction(gaps: Tensor, *, stop_below: float = 1e-12, steps: Tensor | None = None) -> float:
    """Per-iteration contraction factor exp(slope) of a least-squares line through log(gap_t) vs t.

    `gaps` are f − f* along a trajectory (for a stochastic method, their mean over runs: the rate bounds E[f − f*]),
    recorded at iterations `steps` (default 0, 1, 2, …). The fit stops at the first gap below `stop_below` × gap₀,
    where float round-off would flatten the line; it needs two positive points before that.
    """
    gaps = torch.as_tensor(gaps, dtype=torch.float64)
    t = torch.arange(len(gaps), dtype=torch.float64) if steps is None else torch.as_tensor(steps, dtype=torch.float64)
    if gaps.ndim != 1 or t.shape != gaps.shape:
        raise ValueError(f"gaps and steps must be 1-D of equal length, got {tuple(gaps.shape)} and {tuple(t.shape)}")
    if not (len(gaps) >= 2 and gaps[0] > 0):
        raise ValueError(f"need at least two gaps starting positive, got {len(gaps)} starting at {float(gaps[0]):g}")
    below = (gaps <= stop_below * gaps[0]).nonzero()
    end = int(below[0]) if len(below) else len(gaps)
    if end < 2:
        raise ValueError(f"the gap fell below {stop_below:g} × gap₀ after one point; nothing to fit")
    log_gap, t = gaps[:end].log(), t[:end]
    centred = t - t.mean()
    slope = float((centred * (log_gap - log_gap.mean())).sum() / (centred * centred).sum())
    return math.exp(slope)


def _problem_shape(features: Tensor, targets: Tensor, batch_size: int) -> tuple[int, int]:
    """(n, d) of a least-squares problem, after checking its shapes and that `batch_size` is an integer in [1, n]."""
    if features.ndim != 2 or targets.shape != (features.shape[0],):
        raise ValueError(
            f"expected features (n, d) and targets (n,), got {tuple(features.shape)} and {tuple(targets.shape)}"
        )
    n, d = features.shape
    if not (isinstance(batch_size, int) and 1 <= batch_size <= n):
        raise ValueError(f"batch_size must be an integer in [1, n={n}], got {batch_size!r}")
    return n, d
