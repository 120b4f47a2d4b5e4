"""The convergence experiment's budgets as plain data: problem sizes, radii, batch sizes and how long to run.

Least squares runs at the theorem's own step size η(ρ) = (1 − ρβ√κ)/(βκ(1 + ρβ)²) with β, μ computed from the data,
for as many iterations as the bound needs to predict `efolds` e-foldings of f − f* (capped at `max_steps`): the bound
is ≈ 1 − 1/κ², so a problem with κ ≈ 16 needs thousands of iterations. Radii are fractions of the largest
admissible radius 1/(β√κ). Cases beyond the theorem's conditions run radii above it (`beyond_rho`, at SGD's step
η(0)) and steps above η(ρ) (`beyond_eta`, multiples of η(ρ) at the largest admissible fraction of `rho_fractions`).
The neural problems (MLP, matrix factorization) run at a fixed practical step size.
"""
from __future__ import annotations

from dataclasses import dataclass

from samscale.experiments.common import pick_budget


@dataclass(frozen=True)
class ConvergenceBudget:
    """Everything one budget of the convergence experiment runs; see the module docstring for the step sizes."""

    description: str
    n: int  # examples of the over-parameterized least squares
    d: int  # its dimension
    rho_fractions: tuple[float, ...]  # USAM radii as fractions of 1/(β√κ)
    batch_sizes: tuple[int, ...]
    sizes: tuple[int, ...]  # dimensions d for "larger models converge faster" (n fixed)
    under: tuple[int, int]  # (n, d) of the under-parameterized noisy contrast
    noise: float  # label-noise standard deviation of the noisy contrasts
    sam_rhos: tuple[float, ...]  # normalized-SAM radii (absolute lengths)
    efolds: float
    max_steps: int
    n_runs: int  # independent runs averaged for E[f − f*]
    mlp_widths: tuple[int, ...]
    mlp_n: int
    mlp_steps: int
    mlp_lr_scale: float  # η = scale / β̂(w₀) for each width
    mf_ranks: tuple[int, ...]
    mf_steps: int
    mf_lr: float
    neural_rho: float  # USAM radius of the neural problems
    neural_sam_rho: float  # SAM radius of the neural problems
    neural_batch: int
    record_every: int
    beyond_rho: tuple[float, ...] = (2.0, 200.0)  # radii as multiples of 1/(β√κ), beyond the theorem
    beyond_eta: tuple[float, ...] = (4.0, 128.0)  # steps as multiples of η(ρ), beyond the theorem


BUDGETS: dict[str, ConvergenceBudget] = {
    "smoke": ConvergenceBudget(
        description="seconds: a few hundred iterations per case, 2 runs averaged — checks the pipeline and that the "
                    "early contraction already beats the bound",
        n=10, d=200, rho_fractions=(0.0, 0.5), batch_sizes=(1, 5), sizes=(50, 400), under=(60, 10), noise=0.5,
        sam_rhos=(0.05,), efolds=1.0, max_steps=200, n_runs=2,
        mlp_widths=(16,), mlp_n=8, mlp_steps=40, mlp_lr_scale=0.5, mf_ranks=(4,), mf_steps=40, mf_lr=0.05,
        neural_rho=0.01, neural_sam_rho=0.05, neural_batch=4, record_every=10,
    ),
    "cpu": ConvergenceBudget(
        description="80 s of CPU time (12 min wall on 2 shared cores at load 15–20): least squares n = 10, "
                    "d = 200 (κ ≈ 16) at 3 radii × 2 batch sizes, d ∈ {20, 50, 200, 1000}, noisy n = 100 > d = 10 "
                    "contrast, normalized SAM; MLP widths 16 and 128 on 16 teacher–student points; factorization "
                    "ranks 2 and 8 of an 8 × 8 rank-2 matrix",
        n=10, d=200, rho_fractions=(0.0, 0.25, 0.5), batch_sizes=(1, 5), sizes=(20, 50, 200, 1000), under=(100, 10),
        noise=0.5, sam_rhos=(0.01, 0.1), efolds=5.0, max_steps=6000, n_runs=8,
        mlp_widths=(16, 128), mlp_n=16, mlp_steps=1500, mlp_lr_scale=0.5, mf_ranks=(2, 8), mf_steps=1500,
        mf_lr=0.05, neural_rho=0.01, neural_sam_rho=0.05, neural_batch=4, record_every=25,
    ),
    "paper": ConvergenceBudget(
        description="tens of minutes on CPU (not timed here): the cpu cases run to 12 predicted e-foldings with 32 "
                    "runs averaged, a wider MLP and longer neural runs",
        n=10, d=200, rho_fractions=(0.0, 0.25, 0.5, 0.75), batch_sizes=(1, 2, 5, 10), sizes=(20, 50, 200, 1000, 4000),
        under=(200, 20), noise=0.5, sam_rhos=(0.01, 0.03, 0.1), efolds=12.0, max_steps=100_000, n_runs=32,
        mlp_widths=(16, 128, 1024), mlp_n=32, mlp_steps=10_000, mlp_lr_scale=0.5, mf_ranks=(2, 4, 8), mf_steps=10_000,
        mf_lr=0.05, neural_rho=0.01, neural_sam_rho=0.05, neural_batch=4, record_every=50,
    ),
}


def get_budget(name: str) -> ConvergenceBudget:
    """The budget called `name`; an unknown name raises ConfigError listing the valid ones."""
    return pick_budget(BUDGETS, name, "convergence")
