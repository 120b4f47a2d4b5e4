"""Linear stability of SGD and unnormalized SAM (USAM) at an interpolating minimum (docs/PROTOCOL.md §6).

Linearized around the minimum, one step on mini-batch ξ is x ← A_ξ x with A_ξ = I − ηH_ξ − ηρH_ξ² (H_ξ the batch
Hessian; ρ = 0 is SGD). Writing C_ξ = ηH_ξ + ηρH_ξ², so that A_ξ = I − C_ξ:

* mean-square stability ⇔ the spectral radius of P ↦ E[A_ξ P A_ξ] is ≤ 1 (`exact_mean_square_stability`);
* sufficient: λ_max(E[A_ξ²]) ≤ 1 ⇔ E[C_ξ²] ⪯ 2E[C_ξ]; in 1-D this is also necessary. For batch size 1,
  E[A_ξ²] = (I − ηH − ηρH²)² + η(η − 2ρ)S₂ + 2η²ρS₃ + η²ρ²S₄ (expanding E[(I − C_ξ)²] confirms this identity).

The bounds below follow from the sufficient condition with per-example Hessians H_i ⪰ 0 (as at an interpolating
minimum of a convex per-example loss). For a unit vector v let p = vᵀE[C]v and q = vᵀE[C²]v; then p ≤ √q
(Cauchy–Schwarz) and q ≤ 2p, hence p ≤ 2 and q ≤ 4. With v the top eigenvector of H, p ≥ η(a + ρa²), giving
a ≤ (√(1 + 8ρ/η) − 1)/(2ρ); p ≥ ηρ·vᵀM₂v gives s₂² ≤ λ_max(M₂) ≤ 2/(ηρ); q ≥ 2η²ρ·vᵀM₃v and q ≥ η²ρ²·vᵀM₄v give
s₃³ ≤ 2/(η²ρ) and s₄⁴ ≤ 4/(ηρ)². These are the bounds of docs/PROTOCOL.md §6, confirmed. They are implied by the sufficient
condition, hence necessary for stability in 1-D; in higher dimension they bound what the sufficient condition allows.
Only the sharpness bound is tight (1-D, all h_i equal). In 1-D sharper constants hold: s₃³ ≤ 1/(η²ρ) (using
S₄ ≥ s₂⁴), s₂² ≤ 1/(2ηρ) as η → 0 with ηρ fixed, and s₂ ≤ 1/η (Var(C) ≤ 1 and C has slope ≥ η in h ≥ 0).
For SGD the 1-D condition (1 − ηa)² + η²·(n − B)/(B(n − 1))·s₂² ≤ 1 gives a ≤ 2/η and
s₂ ≤ (1/η)·√(B(n − 1)/(n − B)), and nothing on s₃, s₄.

Mini-batches of size B are drawn uniformly without replacement within the batch (every B-subset equally likely).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


def _check_rho(rho: float) -> None:
    if not rho >= 0:
        raise ValueError(f"rho must be non-negative, got {rho}")


def _batch_variance_factor(batch_size: int, n: int) -> float:
    """Var of a size-B batch mean without replacement = (n − B)/(B(n − 1)) × population variance."""
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"n must be an integer ≥ 2, got {n!r}")
    if not (isinstance(batch_size, int) and 1 <= batch_size <= n):
        raise ValueError(f"batch_size must be an integer in [1, n={n}], got {batch_size!r}")
    return (n - batch_size) / (batch_size * (n - 1))


def sgd_sharpness_bound(eta: float) -> float:
    """Largest λ_max(H) of a linearly stable SGD minimum: 2/η."""
    _check_positive("eta", eta)
    return 2.0 / eta


def usam_sharpness_bound(eta: float, rho: float) -> float:
    """Largest λ_max(H) = a of a linearly stable USAM minimum: a + ρa² ≤ 2/η, i.e. a ≤ (√(1 + 8ρ/η) − 1)/(2ρ).

    Evaluated as 4/(η(√(1 + 8ρ/η) + 1)), which is the same number, stable for small ρ, and equals 2/η at ρ = 0.
    """
    _check_positive("eta", eta)
    _check_rho(rho)
    return 4.0 / (eta * (math.sqrt(1.0 + 8.0 * rho / eta) + 1.0))


def sgd_s2_bound(eta: float, batch_size: int, n: int) -> float:
    """Largest non-uniformity s₂ of a linearly stable SGD minimum: (1/η)·√(B(n − 1)/(n − B)); inf when B = n."""
    _check_positive("eta", eta)
    factor = _batch_variance_factor(batch_size, n)
    return math.inf if factor == 0 else 1.0 / (eta * math.sqrt(factor))


def usam_s2_bound(eta: float, rho: float, batch_size: int = 1, n: int | None = None) -> float:
    """Largest s₂ allowed for USAM: √(2/(ηρ)) for batch size 1; for batch size B of n, divided by
    √((n − B)/(B(n − 1))) (the batch Hessian's variance factor). inf at ρ = 0 (use `sgd_s2_bound` there)."""
    _check_positive("eta", eta)
    _check_rho(rho)
    if n is None:
        if batch_size != 1:
            raise ValueError(f"n is needed for batch_size {batch_size} (the variance factor depends on it)")
        factor = 1.0
    else:
        factor = _batch_variance_factor(batch_size, n)
    if rho == 0 or factor == 0:
        return math.inf
    return math.sqrt(2.0 / (eta * rho * factor))


def usam_s3_bound(eta: float, rho: float) -> float:
    """Largest s₃ allowed for USAM with batch size 1: (2/(η²ρ))^{1/3}; inf at ρ = 0."""
    _check_positive("eta", eta)
    _check_rho(rho)
    return math.inf if rho == 0 else (2.0 / (eta**2 * rho)) ** (1.0 / 3.0)


def usam_s4_bound(eta: float, rho: float) -> float:
    """Largest s₄ allowed for USAM with batch size 1: √2/√(ηρ); inf at ρ = 0."""
    _check_positive("eta", eta)
    _check_rho(rho)
    return math.inf if rho == 0 else math.sqrt(2.0) / math.sqrt(eta * rho)


@dataclass(frozen=True)
class StabilityBounds:
    """The stability bounds on (a, s₂, s₃, s₄) for step size η, radius ρ (0 = SGD), batch size B out of n examples."""

    eta: float
    rho: float = 0.0
    batch_size: int = 1
    n: int | None = None

    def __post_init__(self) -> None:
        _check_positive("eta", self.eta)
        _check_rho(self.rho)
        if self.n is not None:
            _batch_variance_factor(self.batch_size, self.n)
        elif self.batch_size != 1:
            raise ValueError(f"n is needed for batch_size {self.batch_size} (the variance factor depends on it)")
        if self.rho > 0 and self.batch_size != 1:
            raise ValueError(f"the s₃, s₄ bounds are derived for batch size 1, got batch_size={self.batch_size}")

    @property
    def sharpness(self) -> float:
        """Bound on a = λ_max(H)."""
        return usam_sharpness_bound(self.eta, self.rho)

    @property
    def s2(self) -> float:
        """Bound on s₂ (SGD's batch-size-dependent bound when ρ = 0; needs n unless B = 1)."""
        if self.rho == 0:
            return 1.0 / self.eta if self.n is None else sgd_s2_bound(self.eta, self.batch_size, self.n)
        return usam_s2_bound(self.eta, self.rho)

    @property
    def s3(self) -> float:
        """Bound on s₃ (inf for SGD)."""
        return usam_s3_bound(self.eta, self.rho)

    @property
    def s4(self) -> float:
        """Bound on s₄ (inf for SGD)."""
        return usam_s4_bound(self.eta, self.rho)

    def as_dict(self) -> dict[str, float]:
        """The four bounds by name: sharpness, s2, s3, s4."""
        return {"sharpness": self.sharpness, "s2": self.s2, "s3": self.s3, "s4": self.s4}

    def satisfied_by(self, **measured: float) -> dict[str, bool]:
        """Which measured quantities (any of sharpness=, s2=, s3=, s4=) lie within their bounds."""
        bounds = self.as_dict()
        unknown = sorted(set(measured) - set(bounds))
        if unknown:
            raise ValueError(f"unknown quantities {unknown}; choose from {sorted(bounds)}")
        return {name: value <= bounds[name] for name, value in measured.items()}


def _stack_hessians(hessians: Sequence[Tensor] | Tensor) -> Tensor:
    stacked = torch.stack([torch.as_tensor(h) for h in hessians]) if not isinstance(hessians, Tensor) else hessians
    stacked = stacked.to(torch.float64)
    if stacked.ndim != 3 or stacked.shape[1] != stacked.shape[2] or stacked.shape[0] < 1:
        raise ValueError(f"per-example Hessians must have shape (n, d, d), got {tuple(stacked.shape)}")
    if not torch.allclose(stacked, stacked.transpose(1, 2)):
        raise ValueError("per-example Hessians must be symmetric")
    return stacked


def _transitions(hessians: Tensor, eta: float, rho: float, batch_size: int, max_batches: int) -> Tensor:
    """A_ξ = I − ηH_ξ − ηρH_ξ² for every mini-batch ξ (all B-subsets; each one equally likely)."""
    n, d, _ = hessians.shape
    if not (isinstance(batch_size, int) and 1 <= batch_size <= n):
        raise ValueError(f"batch_size must be an integer in [1, n={n}], got {batch_size!r}")
    count = math.comb(n, batch_size)
    if count > max_batches:
        raise ValueError(f"{count} mini-batches of size {batch_size} from {n} exceed max_batches={max_batches}")
    subsets = torch.tensor(list(itertools.combinations(range(n), batch_size)))
    batch_hessians = hessians[subsets].mean(dim=1)
    eye = torch.eye(d, dtype=torch.float64)
    return eye - eta * batch_hessians - eta * rho * batch_hessians @ batch_hessians


def exact_mean_square_stability(
    hessians: Sequence[Tensor] | Tensor,
    eta: float,
    rho: float = 0.0,
    batch_size: int = 1,
    *,
    max_batches: int = 100_000,
) -> float:
    """Spectral radius of the second-moment map P ↦ E_ξ[A_ξ P A_ξ]; the linearized dynamics are mean-square stable
    iff it is ≤ 1. Exact by enumerating all mini-batches (uniform B-subsets) — for tiny problems (d² × d² matrix)."""
    _check_positive("eta", eta)
    _check_rho(rho)
    transitions = _transitions(_stack_hessians(hessians), eta, rho, batch_size, max_batches)
    d = transitions.shape[1]
    second_moment = torch.einsum("bij,bkl->ikjl", transitions, transitions).reshape(d * d, d * d)
    second_moment /= transitions.shape[0]
    return float(torch.linalg.eigvalsh(second_moment).abs().max())


def sufficient_stability(
    hessians: Sequence[Tensor] | Tensor,
    eta: float,
    rho: float = 0.0,
    batch_size: int = 1,
    *,
    max_batches: int = 100_000,
) -> float:
    """λ_max(E_ξ[A_ξ²]); a value ≤ 1 is sufficient for mean-square stability, and in 1-D also necessary."""
    _check_positive("eta", eta)
    _check_rho(rho)
    transitions = _transitions(_stack_hessians(hessians), eta, rho, batch_size, max_batches)
    return float(torch.linalg.eigvalsh((transitions @ transitions).mean(dim=0)).max())


def simulate_linearized(
    hessians: Sequence[Tensor] | Tensor,
    eta: float,
    rho: float = 0.0,
    batch_size: int = 1,
    *,
    n_steps: int = 100,
    n_runs: int = 1000,
    x0: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Monte Carlo mean of ‖x_t‖² for t = 0..n_steps over `n_runs` independent runs of x ← A_ξ x (float64).

    Every run starts at `x0` (default: a fixed random unit vector) and draws its own batches (uniform B-subsets).
    """
    _check_positive("eta", eta)
    _check_rho(rho)
    stacked = _stack_hessians(hessians)
    n, d, _ = stacked.shape
    if not (isinstance(batch_size, int) and 1 <= batch_size <= n):
        raise ValueError(f"batch_size must be an integer in [1, n={n}], got {batch_size!r}")
    if x0 is None:
        x0 = torch.randn(d, dtype=torch.float64, generator=generator)
        x0 = x0 / x0.norm()
    if x0.shape != (d,):
        raise ValueError(f"x0 must have shape ({d},), got {tuple(x0.shape)}")
    x = x0.to(torch.float64).expand(n_runs, d).clone()
    eye = torch.eye(d, dtype=torch.float64)
    squared_norms = [float((x * x).sum(1).mean())]
    single = eye - eta * stacked - eta * rho * stacked @ stacked
    for _ in range(n_steps):
        if batch_size == 1:
            transition = single[torch.randint(0, n, (n_runs,), generator=generator)]
        else:
            batch = torch.rand(n_runs, n, generator=generator).argsort(dim=1)[:, :batch_size]
            h = stacked[batch].mean(dim=1)
            transition = eye - eta * h - eta * rho * h @ h
        x = (transition @ x.unsqueeze(-1)).squeeze(-1)
        squared_norms.append(float((x * x).sum(1).mean()))
    return torch.tensor(squared_norms, dtype=torch.float64)
