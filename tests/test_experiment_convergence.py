"""The convergence recipe: simulators against closed forms and each other, the rate fit on exact sequences, and the
smoke budget's results against the theorem (admissible interpolating cases beat the bound; no interpolation, no 0)."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from samscale.errors import ConfigError
from samscale.experiments.convergence.budgets import BUDGETS, get_budget
from samscale.experiments.convergence.cases import least_squares_case
from samscale.experiments.convergence.dynamics import (
    FlatProblem,
    factorization_problem,
    per_example_smoothness,
    run_flat,
)
from samscale.experiments.convergence.run import run_convergence
from samscale.recipes import get_recipe
from samscale.theory import fit_contraction, least_squares_constants, run_sam_least_squares, run_usam_least_squares


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("convergence-smoke")
    page = run_convergence("smoke", out)
    return out, page, json.loads((out / "results.json").read_text())


def _least_squares(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, x @ torch.randn(d, generator=g, dtype=torch.float64)


def test_fit_contraction_recovers_a_geometric_rate_and_stops_at_round_off():
    t = torch.arange(50, dtype=torch.float64)
    assert fit_contraction(3.0 * 0.9**t) == pytest.approx(0.9, rel=1e-12)
    assert fit_contraction(0.5 * 0.7 ** (5 * t[:10]), steps=5 * t[:10]) == pytest.approx(0.7, rel=1e-12)
    floored = torch.cat([0.5**t[:30], torch.full((100,), 1e-30)])  # flat tail below 1e-12 × start: ignored
    assert fit_contraction(floored) == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(ValueError, match="two gaps"):
        fit_contraction(torch.tensor([0.0, 1.0]))


def test_full_batch_gd_gap_matches_the_eigen_decomposition():
    """B = n, ρ = 0: the gap is Σ_i c_i (1 − ηλ_i)^{2t} over the eigen-directions of XᵀX/n (closed form)."""
    x, y = _least_squares(4, 9)
    eta = 0.05
    gaps = run_usam_least_squares(x, y, eta=eta, rho=0.0, n_steps=30, batch_size=4)
    lam, vec = torch.linalg.eigh(x.T @ x / 4)
    w_star = torch.linalg.pinv(x) @ y
    coef = (vec.T @ (0 - w_star)) ** 2 * lam / 2
    t = torch.arange(31, dtype=torch.float64).unsqueeze(1)
    expected = (coef * (1 - eta * lam) ** (2 * t)).sum(1)
    torch.testing.assert_close(gaps, expected, rtol=1e-9, atol=1e-14)


def test_normalized_sam_step_by_hand():
    x, y = _least_squares(3, 5, seed=1)
    eta, rho = 0.01, 0.2
    gaps = run_sam_least_squares(x, y, eta=eta, rho=rho, n_steps=1, batch_size=3)
    grad = x.T @ (x @ torch.zeros(5, dtype=torch.float64) - y) / 3
    w = -eta * x.T @ (x @ (rho * grad / grad.norm()) - y) / 3
    w_star = torch.linalg.pinv(x) @ y
    expected = ((x @ w - y) ** 2).mean() / 2 - ((x @ w_star - y) ** 2).mean() / 2
    assert float(gaps[1]) == pytest.approx(float(expected), rel=1e-10)


def test_autograd_dynamics_equal_the_closed_form_on_least_squares():
    """A linear FlatProblem run by autograd retraces the closed-form USAM and SAM simulators batch for batch."""
    x, y = _least_squares(6, 12, seed=2)
    problem = FlatProblem("linear", 6, torch.zeros(12, dtype=torch.float64), lambda w, idx: x[idx] @ w - y[idx])
    for normalized, simulate in ((False, run_usam_least_squares), (True, run_sam_least_squares)):
        trajectory = run_flat(problem, eta=0.005, rho=0.01, batch_size=2, n_steps=25, record_every=1,
                              normalized=normalized, generator=torch.Generator().manual_seed(7))
        gaps = simulate(x, y, eta=0.005, rho=0.01, n_steps=25, batch_size=2, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(torch.tensor(trajectory.loss, dtype=torch.float64), gaps, rtol=1e-9, atol=1e-14)
        assert trajectory.steps == list(range(26))
    assert per_example_smoothness(problem, problem.params) == pytest.approx(least_squares_constants(x).beta)


def test_factorization_interpolates_at_the_planted_factors_and_refuses_too_small_a_rank():
    problem = factorization_problem(4, 3, 2, 3, 0.1, seed=0)
    assert problem.n == 12 and problem.params.numel() == (4 + 3) * 3
    g = torch.Generator().manual_seed(0)  # re-draw the planted factors in the problem's order
    u, v = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(3, 2, generator=g, dtype=torch.float64)
    planted = torch.cat([torch.cat([u, torch.zeros(4, 1, dtype=torch.float64)], 1).flatten() / 2**0.25,
                         torch.cat([v, torch.zeros(3, 1, dtype=torch.float64)], 1).flatten() / 2**0.25])
    assert float(problem.loss(planted)) == pytest.approx(0.0, abs=1e-28)
    with pytest.raises(ValueError, match="rank 1 < true_rank 2"):
        factorization_problem(4, 3, 2, 1, 0.1, seed=0)


def test_noise_floor_without_interpolation_and_linear_decay_with_it():
    """Same noisy labels: n > d stalls above zero (f* > 0 and f − f* at a floor); n < d converges to f = 0."""
    plan = replace(get_budget("smoke"), efolds=6.0, max_steps=1500, n_runs=4)
    under = least_squares_case("t", 40, 4, 0.5, method="sgd", rho=0.0, batch_size=1, plan=plan, seed=3)
    over = least_squares_case("t", 4, 40, 0.5, method="sgd", rho=0.0, batch_size=1, plan=plan, seed=3)
    assert not under["interpolating"] and over["interpolating"]
    assert under["loss_star"] > 0.01 and over["loss_star"] < 1e-20
    assert under["floor_relative"] > 1e-3 > 1e-6 > over["final_gap_relative"]
    assert over["fitted_rate"] <= over["bound"]


def test_smoke_budget_writes_the_report_and_every_case_has_rate_bound_and_interpolation(smoke):
    out, page, results = smoke
    assert page == out / "report.html"
    for name in ("report.md", "report.html", "figures/rates.png", "figures/ls-rho-batch-gaps.svg",
                 "figures/mlp-pl.png", "figures/factorization-gaps.png"):
        assert (out / name).stat().st_size > 0, name
    assert "samscale reproduce convergence --budget smoke" in page.read_text()
    groups = {case["group"] for case in results["cases"]}
    assert groups == {"ls-rho-batch", "ls-size", "ls-noisy", "ls-sam", "mlp", "factorization"}
    for case in results["cases"]:
        assert {"fitted_rate", "bound", "interpolating", "admissible"} <= set(case)


def test_smoke_admissible_interpolating_cases_contract_at_least_as_fast_as_the_bound(smoke):
    _, _, results = smoke
    checked = [c for c in results["cases"] if c["interpolating"] and c["admissible"]]
    assert len(checked) >= 6
    for case in checked:
        assert case["bound"] is not None and case["fitted_rate"] <= case["bound"], case["problem"]
        assert case["final_gap_relative"] < 1


def test_smoke_non_interpolating_case_keeps_a_positive_loss(smoke):
    _, _, results = smoke
    (under,) = [c for c in results["cases"] if not c["interpolating"]]
    noisy_over = next(c for c in results["cases"] if c["group"] == "ls-noisy" and c["interpolating"])
    assert under["loss_star"] > 0.01
    assert under["floor_relative"] > 5 * noisy_over["floor_relative"]
    sam = [c for c in results["cases"] if c["method"] == "sam"]
    assert sam and all(c["bound"] is None and not c["admissible"] for c in sam)


def test_budgets_and_recipe_registration():
    assert set(BUDGETS) == {"smoke", "cpu", "paper"}
    with pytest.raises(ConfigError, match="unknown budget 'huge'.*smoke, cpu, paper"):
        get_budget("huge")
    assert get_recipe("convergence").name == "convergence"
    assert math.isfinite(BUDGETS["cpu"].efolds)
