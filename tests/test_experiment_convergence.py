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
from samscale.theory import (
    bound_check,
    expected_usam_gaps,
    fit_contraction,
    least_squares_constants,
    run_sam_least_squares,
    run_usam_least_squares,
    usam_rate,
    usam_step_size,
)


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
    assert groups == {"ls-rho-batch", "ls-size", "ls-noisy", "ls-sam", "ls-beyond", "mlp", "factorization"}
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


def test_exact_expected_gap_equals_the_mean_of_many_simulated_runs_and_the_full_batch_run():
    x, y = _least_squares(6, 30)
    beta, mu = least_squares_constants(x)
    rho = 0.5 / (beta * math.sqrt(beta / mu))
    eta = 8 * usam_step_size(beta, mu, rho)
    for batch in (1, 3):
        exact = expected_usam_gaps(x, y, eta=eta, rho=rho, n_steps=60, batch_size=batch)
        sampled = run_usam_least_squares(x, y, eta=eta, rho=rho, n_steps=60, batch_size=batch, n_runs=20_000,
                                         generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(sampled[[10, 30, 60]] / sampled[0], exact[[10, 30, 60]] / exact[0], rtol=0.01,
                                   atol=0)
    full = run_usam_least_squares(x, y, eta=eta, rho=rho, n_steps=60, batch_size=6)  # one batch: deterministic
    torch.testing.assert_close(expected_usam_gaps(x, y, eta=eta, rho=rho, n_steps=60, batch_size=6), full,
                               rtol=1e-9, atol=1e-14)
    x_under, y_under = _least_squares(12, 4)
    with pytest.raises(ValueError, match="does not interpolate"):  # n > d with off-model targets: no interpolation
        expected_usam_gaps(x_under, y_under + torch.linspace(-1, 1, 12, dtype=y_under.dtype), eta=eta, rho=rho,
                           n_steps=1)


def test_bound_check_by_hand():
    assert bound_check(torch.tensor([1.0, 0.5, 0.25]), 0.5) == (True, 1.0, -1)
    holds, worst, first = bound_check(torch.tensor([1.0, 0.5, 0.3, 0.1]), 0.5)
    assert not holds and worst == pytest.approx(1.2) and first == 2
    assert bound_check(torch.tensor([1.0, math.inf]), 0.9)[:2] == (False, math.inf)


def test_cases_beyond_the_conditions_are_reported_and_a_simulator_ignoring_them_is_caught(smoke, monkeypatch):
    _, _, results = smoke
    beyond = [c for c in results["cases"] if c["group"] == "ls-beyond"]
    plan = get_budget("smoke")
    assert len(beyond) == len(plan.beyond_rho) + len(plan.beyond_eta)
    assert all(not c["admissible"] and c["bound"] is None and c["formula_rate"] is not None for c in beyond)
    assert all(c["rho_fraction"] > 1 for c in beyond if c["eta_factor"] == 1)
    # admissible cases hold at every step of the exact expectation; the largest radius and the largest step diverge,
    # so the bound fails there from the first step
    admissible = [c for c in results["cases"] if c["admissible"] and "exact_bound_holds" in c]
    assert len(admissible) >= 4 and all(c["exact_bound_holds"] for c in admissible)
    wild_rho = max((c for c in beyond if c["eta_factor"] == 1), key=lambda c: c["rho_fraction"])
    wild_eta = max(beyond, key=lambda c: c["eta_factor"])
    for case in (wild_rho, wild_eta):
        assert case["diverged"] and not case["exact_bound_holds"] and case["exact_first_violation"] == 1
    # a simulator that ignored the step it is given (running the theorem's η(ρ) whatever it is asked) is caught:
    # the case asking for 128·η(ρ) would then converge within the bound
    import samscale.experiments.convergence.cases as cases

    real = cases.expected_usam_gaps
    monkeypatch.setattr(cases, "expected_usam_gaps", lambda x, y, *, eta, rho, **kw: real(
        x, y, eta=usam_step_size(*least_squares_constants(x), rho), rho=rho, **kw))
    ignoring = cases.least_squares_case("ls-beyond", plan.n, plan.d, 0.0, method="usam", rho=wild_eta["rho"],
                                        batch_size=1, plan=plan, seed=0, rho_fraction=wild_eta["rho_fraction"],
                                        eta_factor=wild_eta["eta_factor"])
    assert ignoring["exact_bound_holds"] != wild_eta["exact_bound_holds"]
    assert usam_rate(wild_eta["beta"], wild_eta["mu"], wild_eta["rho"]) == pytest.approx(wild_eta["formula_rate"])
