"""`samscale reproduce convergence`: does stochastic USAM converge linearly on over-parameterized problems, as fast as
the theorem promises (arXiv 2311.17539, the convergence theorem: interpolation, per-example β-smoothness, μ-PL)?

Cases: least squares with n < d at the theorem's step size for several ρ and batch sizes, and over a ladder of d
(larger models: smaller κ = β/μ, faster); noisy labels with n > d (no interpolation → a noise floor) beside noisy
labels with n < d (still interpolating); normalized SAM on the same problem (not covered by the theorem); and two
non-linear interpolating problems (an MLP on a few teacher–student points, matrix factorization) where the PL
inequality is checked along the trajectory. Writes results.json (per case: fitted_rate, bound, interpolating,
admissible, …), figures, report.md and report.html.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from samscale.experiments.common import Progress, standard_header, write_json
from samscale.experiments.convergence.budgets import get_budget
from samscale.experiments.convergence.cases import INTERPOLATION_GAP, all_cases
from samscale.experiments.convergence.figures import case_label, gap_curves, pl_curves, rate_scatter
from samscale.experiments.stability.report import ReportSection, write_pages

TITLE = "samscale — convergence: stochastic USAM under interpolation vs the linear-rate bound"
GROUPS = {
    "ls-rho-batch": ("Over-parameterized least squares: radius and batch size",
                     "USAM (SGD at ρ = 0) at the theorem's step size η(ρ) on y = Xw*, n < d; β = max‖a_i‖² and "
                     "μ = λ⁺(XXᵀ/n) from the data. The fitted per-iteration factor should be at most the bound."),
    "ls-size": ("Larger models converge faster",
                "Same n, growing dimension d: κ = β/μ falls towards n, so both the bound and the measured rate "
                "improve with the number of parameters."),
    "ls-noisy": ("Noisy labels: under- vs over-parameterized",
                 "SGD on labels with Gaussian noise. With n > d no parameter fits every example (f* > 0, "
                 "the theorem's interpolation fails): f − f* stalls at a noise floor ∝ η·σ². With n < d the model "
                 "still interpolates the noisy labels and converges linearly."),
    "ls-sam": ("Normalized SAM on the same least squares",
               "SAM's ascent has fixed length ρ, so it does not vanish at the minimum: f − f* falls to a floor that "
               "grows with ρ instead of converging. The theorem covers USAM only (no bound for SAM). η is SGD's."),
    "ls-beyond": ("Beyond the theorem's conditions",
                  "USAM on the same least squares with ρ above its admissible limit 1/(β√κ) (at SGD's step η(0)) "
                  "or η above η(ρ). The theorem promises nothing here; each is checked at every step against the "
                  "rate formula evaluated at its ρ, which a bound that ignored the conditions would claim."),
    "mlp": ("Two-layer ReLU MLP interpolating teacher–student points",
            "η = 0.5/β̂(w₀) per width; μ̂ = smallest PL ratio along the run, β̂ = max_i ‖∇r_i‖² at the end. The "
            "bound uses these estimates; the step is larger than the theorem's, so these cases are not admissible."),
    "factorization": ("Matrix factorization (fully observed 8 × 8, rank 2)",
                      "Factors of rank 2 (exact) and 8 (over-parameterized) from a small random start; fixed η."),
}
TABLE_COLUMNS = ["problem", "method", "batch_size", "rho", "rho_fraction", "eta", "eta_factor", "beta", "mu",
                 "kappa", "bound", "formula_rate", "fitted_rate", "faster_than_bound", "exact_bound_holds",
                 "exact_worst_ratio", "exact_first_violation", "interpolating", "admissible", "diverged", "n_steps",
                 "final_gap_relative", "floor_relative", "loss_star"]


def run_convergence(budget: str, out: str | Path, on_progress: Progress | None = None) -> Path:
    """Run every case of the convergence experiment at `budget` (smoke, cpu or paper) into `out`; return the path of
    report.html. Runs single-threaded (tiny problems; threads only add overhead) and restores the thread count."""
    plan = get_budget(budget)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress = on_progress or (lambda line: None)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cases = all_cases(plan, progress)
    finally:
        torch.set_num_threads(threads)
    for case in cases:
        case["faster_than_bound"] = (case["fitted_rate"] <= case["bound"]) if case["bound"] is not None else None
        case["reached_minimum"] = case["final_gap_relative"] < INTERPOLATION_GAP
    seconds = time.perf_counter() - started
    header = standard_header("convergence", budget, plan.description, out, seconds)
    notes = _notes(cases)
    write_json(out / "results.json", {"title": TITLE, "budget": budget, "header": header, "notes": notes,
                                      "plan": plan.__dict__, "cases": cases})
    sections = [_section(group, [c for c in cases if c["group"] == group]) for group in GROUPS]
    sections.append(ReportSection("Fitted rate vs bound, all cases with a bound",
                                  "Each point is one case; on or above the diagonal it contracts at least as fast as "
                                  "guaranteed.", _table(cases), [rate_scatter(cases)]))
    progress(f"writing the report to {out}")
    return write_pages(out, title=TITLE, header=header, notes=notes, sections=[s for s in sections if s])


def _section(group: str, cases: list[dict[str, Any]]) -> ReportSection | None:
    if not cases:
        return None
    heading, text = GROUPS[group]
    plots = [gap_curves(cases, f"{group}-gaps", heading)]
    if group in ("mlp", "factorization"):
        plots.append(pl_curves(cases, f"{group}-pl", heading))
        mus = ", ".join(f"{case_label(c)}: μ̂ = {c['mu_empirical']:.3g}" for c in cases)
        text = f"{text} Empirical PL constants: {mus}."
    return ReportSection(heading, text, _table(cases), plots)


def _table(cases: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{k: c.get(k) for k in TABLE_COLUMNS} for c in cases], columns=TABLE_COLUMNS)


def _notes(cases: list[dict[str, Any]]) -> list[str]:
    checked = [c for c in cases if c["admissible"] and c["interpolating"]]
    beaten = [c for c in checked if c["faster_than_bound"]]
    exact = [c for c in checked if "exact_bound_holds" in c]
    beyond = [c for c in cases if c["group"] == "ls-beyond"]
    notes = [
        f"Exact expectation, every step: {sum(c['exact_bound_holds'] for c in exact)} of {len(exact)} admissible "
        "least-squares cases satisfy E[f(x_t) − f*] ≤ rate^t (f(x_0) − f*) at every t (largest ratio "
        f"{max((c['exact_worst_ratio'] for c in exact), default=math.nan):.4g}).",
        *[f"Beyond the conditions, USAM ρ = {c['rho_fraction']:g}·ρ_max, η = {c['eta_factor']:g}·"
          f"{'η(ρ)' if c['rho_fraction'] < 1 else 'η(0)'}: the rate formula's {c['formula_rate']:.6f} "
          + ("holds at every step" if c["exact_bound_holds"] else
             f"fails from step {c['exact_first_violation']}" + (" (the expectation diverges)" if c["diverged"]
                                                                 else ""))
          + f"; exact gap after {c['n_steps']} steps {c['exact_final_gap_relative']:.3g} of its start."
          for c in beyond],

        f"{len(beaten)} of {len(checked)} interpolating cases run at a theory-admissible step size contract at least "
        "as fast as the bound 1 − (1 − ρβ√κ)²/(κ²(1 + ρβ)²)." + (
            "" if len(beaten) == len(checked) else " Slower: " + ", ".join(
                f"{case_label(c)} ({c['fitted_rate']:.6f} > {c['bound']:.6f})" for c in checked
                if not c["faster_than_bound"])),
        "fitted_rate = exp(slope) of a least-squares line through log E[f − f*] (mean over runs) vs iteration, "
        "stopped where the gap falls below 1e-12 of its start (round-off). The bound is a worst case over "
        "problems with the same β and μ, so a real problem contracts faster; the bound's rate is ≈ 1 − 1/κ².",
    ]
    floors = [c for c in cases if not c["interpolating"]]
    for c in floors:
        notes.append(f"No interpolation ({c['problem']}): f* = {c['loss_star']:.3g} > 0 and f − f* stalls at "
                     f"{c['floor_relative']:.2e} of its start (noise floor) instead of falling to 0.")
    diverged = [c for c in cases if c.get("diverged")]
    if diverged:
        notes.append("Diverged: " + ", ".join(case_label(c) for c in diverged))
    notes.append("MLP and factorization: β̂ and μ̂ are measured, not known, so their bound is indicative; "
                 + ("the PL inequality held along every such trajectory (μ̂ > 0)." if all(
                     c.get("pl_holds") for c in cases if c["group"] in ("mlp", "factorization")) else
                    "the PL ratio reached 0 somewhere (a stationary point that is not a minimum)."))
    if any(math.isnan(c["fitted_rate"]) for c in cases):
        notes.append("A NaN fitted rate means the gap fell below the round-off threshold after one point.")
    return notes
