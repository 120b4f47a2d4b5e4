"""The cases of the convergence experiment, each a record of measured numbers beside the theorem's prediction.

Every record carries `fitted_rate` (exp of the slope of log E[f − f*] vs iteration), `bound` (the USAM rate
1 − (1 − ρβ√κ)²/(κ²(1 + ρβ)²) for the case's β, μ, ρ; None where the theorem does not apply), `interpolating`
(f* = 0 is attained on every example) and `admissible` (the theorem's hypotheses on the step and radius hold, with
β and μ exact), and the mean gap curve for the figures.

USAM and SGD on interpolating least squares also carry the exact expectation E[f(x_t) − f*] at every step
(`theory.expected_usam_gaps`) checked against the rate at every step, not only through the fitted slope:
`exact_bound_holds` (gap_t ≤ rate^t gap_0 for all t), `exact_worst_ratio` and `exact_first_violation`. The rate is
the bound where the case is admissible and otherwise `formula_rate`, the same expression evaluated outside the
theorem's conditions (ρ above 1/(β√κ), or η above η(ρ)): what a bound that ignored them would claim.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from samscale.data.synthetic import least_squares_problem
from samscale.experiments.convergence.budgets import ConvergenceBudget
from samscale.experiments.convergence.dynamics import (
    FlatProblem,
    factorization_problem,
    mlp_problem,
    per_example_smoothness,
    run_flat,
)
from samscale.theory import (
    bound_check,
    expected_usam_gaps,
    fit_contraction,
    least_squares_constants,
    run_sam_least_squares,
    run_usam_least_squares,
    usam_rate,
    usam_rate_formula,
    usam_step_size,
)

CURVE_POINTS = 200  # points per curve kept in results.json and drawn
INTERPOLATION_GAP = 1e-8  # f − f* relative to its start, below which a run counts as having reached the minimum


def _thin(steps: list[int], values: list[float]) -> dict[str, list[float]]:
    every = max(1, math.ceil(len(steps) / CURVE_POINTS))
    keep = list(range(0, len(steps), every))
    if keep[-1] != len(steps) - 1:
        keep.append(len(steps) - 1)
    return {"steps": [steps[i] for i in keep], "gaps": [values[i] for i in keep]}


def _max_radius(beta: float, mu: float) -> float:
    return 1.0 / (beta * math.sqrt(beta / mu))


def _summary(gaps: torch.Tensor, steps: list[int]) -> dict[str, Any]:
    """Fitted rate, final and floor gaps relative to the start, and the thinned curve; NaN rate if it diverged."""
    tail = gaps[-max(1, len(gaps) // 10):]
    try:
        rate = fit_contraction(gaps, steps=torch.tensor(steps)) if bool(torch.isfinite(gaps).all()) else math.nan
    except ValueError:
        rate = math.nan
    return {
        "fitted_rate": rate,
        "initial_gap": float(gaps[0]),
        "final_gap_relative": float(gaps[-1] / gaps[0]),
        "floor_relative": float(tail.mean() / gaps[0]),
        "curve": _thin(steps, gaps.tolist()),
    }


def least_squares_case(group: str, n: int, d: int, noise: float, *, method: str, rho: float, batch_size: int,
                       plan: ConvergenceBudget, seed: int, rho_fraction: float | None = None,
                       eta_factor: float = 1.0) -> dict[str, Any]:
    """One least-squares case: data y = Xw* (+ noise), β and μ from X, run at `eta_factor` × the theorem's step.

    USAM runs at η(ρ) (at η(0), SGD's step, when ρ is beyond the admissible 1/(β√κ), where η(ρ) is not defined);
    normalized SAM (no theorem) at η(0), with the absolute radius `rho`. The case is admissible when it is USAM (or
    SGD) with ρ < 1/(β√κ) and eta_factor ≤ 1.
    """
    problem = least_squares_problem(n, d, 1, noise, torch.Generator().manual_seed(seed))
    x, y = problem.x, problem.y.squeeze(1)
    beta, mu = least_squares_constants(x)
    kappa = beta / mu
    usam = method in ("sgd", "usam")
    within = rho < _max_radius(beta, mu)
    eta_theory = usam_step_size(beta, mu, rho if usam and within else 0.0)
    eta = eta_factor * eta_theory
    admissible = usam and within and eta_factor <= 1
    bound = usam_rate(beta, mu, rho) if admissible else None
    formula = usam_rate_formula(beta, mu, rho if usam else 0.0)
    n_steps = min(plan.max_steps, math.ceil(plan.efolds / (1 - formula)))
    simulate = run_usam_least_squares if usam else run_sam_least_squares
    gaps = simulate(x, y, eta=eta, rho=rho, n_steps=n_steps, batch_size=batch_size, n_runs=plan.n_runs,
                    generator=torch.Generator().manual_seed(seed + 1))
    solution = torch.linalg.lstsq(x, y.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    loss_star = float(((x @ solution - y) ** 2).mean() / 2)
    record = {
        "group": group, "problem": f"least squares n={n}, d={d}" + (f", noise {noise:g}" if noise else ""),
        "method": method, "n": n, "n_params": d, "batch_size": batch_size, "rho": rho, "rho_fraction": rho_fraction,
        "rho_max": _max_radius(beta, mu), "eta": eta, "eta_factor": eta_factor,
        "eta_theory": eta_theory if usam else None, "beta": beta, "mu": mu, "kappa": kappa,
        "mu_empirical": None, "bound": bound, "formula_rate": formula if usam else None, "interpolating": n <= d,
        "admissible": admissible, "loss_star": loss_star, "n_steps": n_steps, "n_runs": plan.n_runs,
        "diverged": not bool(torch.isfinite(gaps).all()) or bool(gaps[-1] > gaps[0]),
        **_summary(gaps, list(range(n_steps + 1))),
    }
    if usam and n <= d:  # the exact expectation, checked against the rate at every step
        exact = expected_usam_gaps(x, y, eta=eta, rho=rho, n_steps=n_steps, batch_size=batch_size)
        holds, worst, first = bound_check(exact, bound if admissible else formula)
        record.update(exact_bound_holds=holds, exact_worst_ratio=worst, exact_first_violation=first,
                      exact_final_gap_relative=float(exact[-1] / exact[0]),
                      exact_curve=_thin(list(range(n_steps + 1)), exact.tolist()))
    return record


def neural_case(group: str, problem: FlatProblem, *, method: str, eta: float, rho: float, plan: ConvergenceBudget,
                n_steps: int, seed: int) -> dict[str, Any]:
    """One run of SGD (ρ = 0), USAM or SAM on an interpolating non-linear problem (f* = 0).

    μ̂ is the smallest PL ratio ‖∇f‖²/(2f) along the trajectory, β̂ the per-example smoothness at the end point; the
    bound is the USAM rate for (β̂, μ̂, ρ) when ρ is admissible for them, and the case counts as admissible only if
    η is also at most the theorem's step size — β̂ and μ̂ are estimates, so the bound is indicative here.
    """
    trajectory = run_flat(problem, eta=eta, rho=rho, batch_size=plan.neural_batch, n_steps=n_steps,
                          record_every=plan.record_every, normalized=method == "sam",
                          generator=torch.Generator().manual_seed(seed))
    gaps = torch.tensor(trajectory.loss, dtype=torch.float64)
    ratios = trajectory.pl_ratios()
    mu_hat = min(ratios) if ratios else math.nan
    finite = bool(torch.isfinite(gaps).all())
    beta_hat = per_example_smoothness(problem, trajectory.final_params) if finite else math.nan
    bound = eta_theory = None
    if method != "sam" and finite and 0 < mu_hat <= beta_hat and rho < _max_radius(beta_hat, mu_hat):
        bound, eta_theory = usam_rate(beta_hat, mu_hat, rho), usam_step_size(beta_hat, mu_hat, rho)
    record = {
        "group": group, "problem": problem.name, "method": method, "n": problem.n,
        "n_params": problem.params.numel(), "batch_size": plan.neural_batch, "rho": rho, "rho_fraction": None,
        "eta": eta, "eta_theory": eta_theory, "beta": beta_hat, "mu": mu_hat,
        "kappa": beta_hat / mu_hat if mu_hat > 0 else math.nan, "mu_empirical": mu_hat, "bound": bound,
        "interpolating": True, "admissible": eta_theory is not None and eta <= eta_theory, "loss_star": 0.0,
        "n_steps": n_steps, "n_runs": 1, "pl_holds": bool(ratios) and mu_hat > 0,
        "pl_ratio_curve": _thin(trajectory.steps[: len(ratios)], ratios),
    }
    if finite:
        record.update(_summary(gaps, trajectory.steps))
    else:
        record.update(fitted_rate=math.nan, initial_gap=float(gaps[0]), final_gap_relative=math.inf,
                      floor_relative=math.inf, curve=_thin(trajectory.steps, trajectory.loss), diverged=True)
    return record


def all_cases(plan: ConvergenceBudget, progress) -> list[dict[str, Any]]:
    """Every case of the budget, in report order."""
    cases = []
    x_main = least_squares_problem(plan.n, plan.d, 1, 0.0, torch.Generator().manual_seed(0)).x
    beta, mu = least_squares_constants(x_main)
    for fraction in plan.rho_fractions:
        for batch in plan.batch_sizes:
            progress(f"least squares n={plan.n}, d={plan.d}: USAM ρ = {fraction:g}·ρ_max, B = {batch}")
            cases.append(least_squares_case(
                "ls-rho-batch", plan.n, plan.d, 0.0, method="sgd" if fraction == 0 else "usam",
                rho=fraction * _max_radius(beta, mu), batch_size=batch, plan=plan, seed=0, rho_fraction=fraction))
    half = max(plan.rho_fractions)
    for d in plan.sizes:
        progress(f"least squares size ladder: d = {d}")
        x = least_squares_problem(plan.n, d, 1, 0.0, torch.Generator().manual_seed(0)).x
        b, m = least_squares_constants(x)
        cases.append(least_squares_case("ls-size", plan.n, d, 0.0, method="usam" if half else "sgd",
                                        rho=half * _max_radius(b, m), batch_size=1, plan=plan, seed=0,
                                        rho_fraction=half))
    for n, d in ((plan.under[0], plan.under[1]), (plan.n, plan.d)):
        progress(f"noisy labels (std {plan.noise:g}): n = {n}, d = {d}")
        cases.append(least_squares_case("ls-noisy", n, d, plan.noise, method="sgd", rho=0.0, batch_size=1,
                                        plan=plan, seed=0, rho_fraction=0.0))
    for rho in plan.sam_rhos:
        progress(f"normalized SAM ρ = {rho:g} on least squares n={plan.n}, d={plan.d}")
        cases.append(least_squares_case("ls-sam", plan.n, plan.d, 0.0, method="sam", rho=rho, batch_size=1,
                                        plan=plan, seed=0))
    cases.append(least_squares_case("ls-sam", plan.n, plan.d, 0.0, method="sgd", rho=0.0, batch_size=1, plan=plan,
                                    seed=0, rho_fraction=0.0))
    for fraction in plan.beyond_rho:
        progress(f"beyond the conditions: USAM ρ = {fraction:g}·ρ_max at SGD's step η(0)")
        cases.append(least_squares_case("ls-beyond", plan.n, plan.d, 0.0, method="usam",
                                        rho=fraction * _max_radius(beta, mu), batch_size=1, plan=plan, seed=0,
                                        rho_fraction=fraction))
    for factor in plan.beyond_eta:
        progress(f"beyond the conditions: USAM ρ = {half:g}·ρ_max at η = {factor:g}·η(ρ)")
        cases.append(least_squares_case("ls-beyond", plan.n, plan.d, 0.0, method="usam",
                                        rho=half * _max_radius(beta, mu), batch_size=1, plan=plan, seed=0,
                                        rho_fraction=half, eta_factor=factor))
    for width in plan.mlp_widths:
        problem = mlp_problem(plan.mlp_n, 5, width, 2, seed=0)
        eta = plan.mlp_lr_scale / per_example_smoothness(problem, problem.params)
        for method, rho in (("sgd", 0.0), ("usam", plan.neural_rho), ("sam", plan.neural_sam_rho)):
            progress(f"MLP width {width}: {method.upper()}")
            cases.append(neural_case("mlp", problem, method=method, eta=eta, rho=rho, plan=plan,
                                     n_steps=plan.mlp_steps, seed=1))
    for rank in plan.mf_ranks:
        problem = factorization_problem(8, 8, 2, rank, 0.3, seed=0)
        for method, rho in (("sgd", 0.0), ("usam", plan.neural_rho), ("sam", plan.neural_sam_rho)):
            progress(f"matrix factorization rank {rank}: {method.upper()}")
            cases.append(neural_case("factorization", problem, method=method, eta=plan.mf_lr, rho=rho, plan=plan,
                                     n_steps=plan.mf_steps, seed=1))
    return cases
