"""`samscale reproduce two-layer`: test error of GD and SAM vs width m for the two-layer ReLU CNN of the feature-
learning setting (Chen et al. 2023, "Why does sharpness-aware minimization generalize better than SGD?"), which the
paper's two-layer result builds on (arXiv 2311.17539: test error ε needs width ∝ 1/ε, i.e. error ∝ 1/m).

Data: y ∈ {±1} uniform; x = [y·μ, ξ] (two patches in R^d), μ = ‖μ‖·e₁, ξ ~ N(0, σ²(I − μμᵀ/‖μ‖²)); training labels
flipped with probability p. Model f(W, x) = F₊₁ − F₋₁, F_j = (1/m) Σ_r Σ_patch ReLU(⟨w_{j,r}, x_patch⟩), W ~ N(0, σ₀²);
logistic loss; full-batch GD and normalized SAM share η, steps and initialization. Test error is measured against
clean labels (the Bayes error is 0 there; against noisy labels it would be p more). The 1/m claim is checked by a
least-squares fit of log(error) on log(m): a slope of −1 means error ∝ 1/m.

Regime. Chen et al. (2023) separate GD from SAM by the signal-to-noise criterion n‖μ‖⁴ vs σ⁴d: above it (benign
overfitting) GD already learns the signal and SAM has nothing to add; below it GD memorizes the noise patches and its
test error stays bounded away from 0, while SAM, whose ascent keeps noise memorization from starting, can still learn
μ. The budgets sit below it (`TwoLayerBudget.snr`, n‖μ‖⁴/(σ⁴d), is 0.253 at the cpu and paper budgets).

Test error. Given trained weights, the output on a test point depends on the noise patch ξ only through the 2m
projections ⟨w_{j,r}, ξ⟩, which are jointly Gaussian with covariance σ²W̃W̃ᵀ (W̃: the weights without the μ
coordinate). `test_error` draws those projections directly (exactly the test distribution, at 2m numbers per point
instead of d) in chunks until it has counted `min_mistakes` mistakes — 400 give a 95 % interval of about ±10 % of the
error — or drawn `max_test` points; each run reports its error's 95 % half-width relative to the error.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.nn import functional as F

from samscale.experiments.common import Progress, pick_budget, standard_header, write_json
from samscale.experiments.stability.report import ReportSection, write_pages
from samscale.report.figures import COLORS, FIGSIZE, Plot

TITLE = "samscale — two-layer: GD vs SAM test error vs width in the signal–noise patch setting"
PAPER_CLAIM = "for two-layer ReLU networks, SAM's test error ε needs width m ∝ 1/ε (error falls like 1/m)"


@dataclass(frozen=True)
class TwoLayerBudget:
    """Data (n, d, ‖μ‖, σ, flip rate p), the test-error sampling (mistakes to count, most points to draw), widths,
    seeds and the optimization (η, steps, ρ, σ₀)."""

    description: str
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    steps: int
    n: int = 100
    d: int = 2000
    signal: float = 1.5
    sigma: float = 1.0
    flip: float = 0.1
    min_mistakes: int = 400
    max_test: int = 4_000_000
    lr: float = 0.5
    rho: float = 1.0
    init: float = 0.01

    @property
    def snr(self) -> float:
        """n‖μ‖⁴/(σ⁴d): below 1 GD overfits harmfully (Chen et al. 2023), well above 1 it overfits benignly."""
        return self.n * self.signal**4 / (self.sigma**4 * self.d)


BUDGETS = {
    "smoke": TwoLayerBudget("seconds: widths 4 and 16, 50 steps, 1 seed, n = 40, d = 400 (n‖μ‖⁴/σ⁴d = 0.51)",
                            (4, 16), (0,), 50, n=40, d=400, min_mistakes=100, max_test=200_000),
    "cpu": TwoLayerBudget("widths 4–128 (×2), 3 seeds, 300 full-batch steps, n = 100, d = 2000, ‖μ‖ = 1.5, σ = 1 "
                          "(n‖μ‖⁴ = 506 against σ⁴d = 2000: the harmful-overfitting regime), p = 0.1, η = 0.5, "
                          "SAM ρ = 1; test error from at least 400 mistakes or 4M test points",
                          (4, 8, 16, 32, 64, 128), (0, 1, 2), 300),
    "paper": TwoLayerBudget("widths 4–512, 5 seeds, 2000 steps, the cpu budget's data; test error from at least 400 "
                            "mistakes or 20M test points (not timed)", (4, 8, 16, 32, 64, 128, 256, 512),
                            (0, 1, 2, 3, 4), 2000, max_test=20_000_000),
}
CHUNK = 100_000  # test points drawn at a time


def patch_data(plan: TwoLayerBudget, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(x, y): x of shape (n, 2, d) = [y·μ, ξ] with ξ orthogonal to μ = ‖μ‖e₁; clean labels y ∈ {±1}."""
    y = torch.randint(0, 2, (n,), generator=generator).double() * 2 - 1
    noise = plan.sigma * torch.randn(n, plan.d, generator=generator, dtype=torch.float64)
    noise[:, 0] = 0.0  # (I − μμᵀ/‖μ‖²) removes the μ direction
    signal = torch.zeros(n, plan.d, dtype=torch.float64)
    signal[:, 0] = plan.signal * y
    return torch.stack([signal, noise], dim=1), y


def test_error(plan: TwoLayerBudget, w: Tensor, generator: torch.Generator) -> tuple[float, int, int]:
    """(error, mistakes, points): the clean-label test error of weights w (2, m, d), estimated from fresh test
    points drawn until `plan.min_mistakes` mistakes or `plan.max_test` points (module docstring: the noise patch
    enters only through its 2m Gaussian projections, drawn here with covariance σ²W̃W̃ᵀ)."""
    width = w.shape[1]
    rows = w[:, :, 1:].reshape(2 * width, -1)  # the noise patch has no μ = e₁ component
    values, vectors = torch.linalg.eigh(rows @ rows.T)
    factor = plan.sigma * vectors * values.clamp_min(0).sqrt()  # (2m, 2m): z = factor @ u, u ~ N(0, I)
    along_mu = plan.signal * w[:, :, 0]  # ⟨w_{j,r}, μ⟩
    mistakes = points = 0
    while mistakes < plan.min_mistakes and points < plan.max_test:
        size = min(CHUNK, plan.max_test - points)
        y = torch.randint(0, 2, (size,), generator=generator).double() * 2 - 1
        z = (torch.randn(size, 2 * width, generator=generator, dtype=torch.float64) @ factor.T).view(size, 2, width)
        patches = torch.relu(y[:, None, None] * along_mu) + torch.relu(z)  # (size, 2, m): signal + noise patch
        f = patches.sum(dim=2) / width
        mistakes += int((torch.sign(f[:, 0] - f[:, 1]) != y).sum())
        points += size
    return mistakes / points, mistakes, points


def relative_half_width(mistakes: int, points: int) -> float:
    """The 95 % (normal) interval's half-width of an error estimated from `mistakes` of `points`, relative to the
    error; infinite with no mistakes."""
    if mistakes == 0:
        return math.inf
    error = mistakes / points
    return 1.959963984540054 * math.sqrt(error * (1 - error) / points) / error


def network(w: Tensor, x: Tensor) -> Tensor:
    """f(W, x) = F₊₁ − F₋₁ with F_j = (1/m) Σ_r Σ_patch ReLU(⟨w_{j,r}, x_patch⟩); w has shape (2, m, d)."""
    activations = torch.relu(torch.einsum("jrd,npd->njrp", w, x)).sum(dim=(2, 3)) / w.shape[1]
    return activations[:, 0] - activations[:, 1]


def _train(plan: TwoLayerBudget, width: int, seed: int, method: str, x: Tensor, y: Tensor) -> Tensor:
    w = plan.init * torch.randn(2, width, plan.d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def gradient(point: Tensor) -> Tensor:
        point = point.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.softplus(-y * network(point, x)).mean(), point)
        return g

    for _ in range(plan.steps):
        g = gradient(w)
        if method == "sam":
            g = gradient(w + plan.rho * g / (g.norm() + 1e-12))
        w = w - plan.lr * g
    return w


def fit_exponent(widths: list[float], errors: list[float]) -> float:
    """Slope of log(error) on log(width) (least squares); NaN with fewer than two positive errors."""
    points = [(math.log(m), math.log(e)) for m, e in zip(widths, errors) if e > 0]
    if len(points) < 2:
        return math.nan
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    return sum((a - mx) * (b - my) for a, b in points) / sum((a - mx) ** 2 for a, _ in points)


def run_two_layer(budget: str, out: str | Path, on_progress: Progress | None = None) -> Path:
    """Train GD and SAM at every width and seed of `budget`, fit the error exponents and report into `out`."""
    plan = pick_budget(BUDGETS, budget, "two-layer")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress = on_progress or (lambda line: None)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    try:
        for seed in plan.seeds:
            generator = torch.Generator().manual_seed(1000 + seed)
            x, y_clean = patch_data(plan, plan.n, generator)
            flips = torch.rand(plan.n, generator=generator) < plan.flip
            y = torch.where(flips, -y_clean, y_clean)
            for width in plan.widths:
                for method in ("gd", "sam"):
                    progress(f"seed {seed}, width {width}: {method.upper()}")
                    w = _train(plan, width, seed, method, x, y)
                    with torch.no_grad():
                        error, mistakes, points = test_error(
                            plan, w, torch.Generator().manual_seed(10_000 * (seed + 1) + width))
                        rows.append({"seed": seed, "width": width, "method": method,
                                     "train_error_noisy": float((torch.sign(network(w, x)) != y).double().mean()),
                                     "test_error": error, "test_points": points, "test_mistakes": mistakes,
                                     "test_error_rel_ci95": relative_half_width(mistakes, points),
                                     "flipped": int(flips.sum())})
    finally:
        torch.set_num_threads(threads)
    runs = pd.DataFrame(rows)
    table = runs.groupby(["width", "method"])["test_error"].agg(["mean", "std"]).reset_index()
    exponents = {m: fit_exponent(list(t["width"]), list(t["mean"])) for m, t in table.groupby("method")}
    header = standard_header("two-layer", budget, plan.description, out, time.perf_counter() - started)
    resolved = [r for r in rows if r["test_error_rel_ci95"] <= 0.1]
    notes = [f"Paper (arXiv 2311.17539): {PAPER_CLAIM}.",
             f"Regime: n‖μ‖⁴ = {plan.n * plan.signal**4:.4g} against σ⁴d = {plan.sigma**4 * plan.d:.4g} "
             f"(ratio {plan.snr:.3g}; below 1 is the harmful-overfitting regime of Chen et al. 2023, where GD "
             "memorizes the noise and SAM can differ from it).",
             f"{len(resolved)} of {len(rows)} runs' test errors are estimated within ±10 % (95 %); the others "
             f"reached {plan.max_test:,} test points with fewer than {plan.min_mistakes} mistakes (errors that small "
             "are shown with their wider intervals in the table of all runs).",
             *[f"Fitted exponent of {m.upper()}'s mean test error vs width: {e:.3g} (−1 would be 1/m)."
               for m, e in exponents.items()],
             "Test error against clean labels; the training labels carry p label flips (train_error_noisy is "
             "measured against them: 0 means the flipped labels were memorized). Exponents use widths whose mean "
             "error is > 0."]
    write_json(out / "results.json", {"title": TITLE, "budget": budget, "header": header, "notes": notes,
                                      "paper": PAPER_CLAIM, "plan": plan.__dict__, "exponents": exponents,
                                      "summary": table.to_dict(orient="records"), "runs": rows})
    return write_pages(out, title=TITLE, header=header, notes=notes, sections=[
        ReportSection("Test error vs width (mean ± std over seeds)", "Clean-label test error.", table,
                      [_plot(table, exponents)]),
        ReportSection("All runs", "One row per (seed, width, optimizer).", runs)])


def _plot(table: pd.DataFrame, exponents: dict[str, float]) -> Plot:
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    for i, (method, rows) in enumerate(table.groupby("method", sort=True)):
        ax.errorbar(rows["width"], rows["mean"], yerr=rows["std"].fillna(0), color=COLORS[i], marker="o",
                    capsize=2, label=f"{method.upper()} (slope {exponents[method]:.2f})")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("width m (log)")
    ax.set_ylabel("test error (clean labels)")
    ax.set_title("test error vs width", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return Plot("test-error-vs-width", "test error vs width", fig, table)
