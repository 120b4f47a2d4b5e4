"""`samscale reproduce solution-space`: do GD and SAM end at the same function when the network is small and at
different ones when it is large (arXiv 2311.17539, the 1-D toy with 10 vs 100 hidden ReLU neurons)?

Data: n points of sin(πx) on [-1, 1] (`sine-1d`). For each width and seed, GD and normalized SAM (full batch, so
deterministic) start from the same Flax initialization and run the same number of steps at the same η. Measured:
the learned functions on a grid of [-1, 1]; the RMS (L2) distance between the GD and SAM functions on that grid; the
sharpness λ_max of the exact full-batch Hessian at each end point; training loss; test loss against sin(πx); and the
total variation Σ|f(x_{k+1}) − f(x_k)| of each function (a simplicity measure). Writes results.json, figures and
report pages.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from samscale.data.synthetic import sine_problem
from samscale.experiments.common import Progress, pick_budget, standard_header, write_json
from samscale.experiments.convergence.dynamics import network_problem, predict, run_flat
from samscale.experiments.stability.report import ReportSection, write_pages
from samscale.models.regression import two_layer
from samscale.report.figures import COLORS, FIGSIZE, Plot

TITLE = "samscale — solution space: GD vs SAM functions for small and large 1-D ReLU networks"
PAPER_CLAIM = "same function when small (10 neurons), a different, simpler/flatter one when large (100 neurons)"


@dataclass(frozen=True)
class SolutionSpaceBudget:
    """Widths × seeds, full-batch steps at learning rate `lr`, SAM radius `rho`, n training points."""

    description: str
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    steps: int
    lr: float
    rho: float
    n: int = 12
    grid: int = 201


BUDGETS = {
    "smoke": SolutionSpaceBudget("seconds: 200 steps, 1 seed — checks the pipeline", (10, 100), (0,), 200, 0.05,
                                 0.05),
    "cpu": SolutionSpaceBudget("widths 10 and 100, 3 seeds, 3000 full-batch steps at η = 0.05, SAM ρ = 0.05; "
                               "100 s of CPU time (31 min wall on 2 cores shared at load ≈ 20)",
                               (10, 100), (0, 1, 2), 3000, 0.05, 0.05),
    "paper": SolutionSpaceBudget("widths 10 and 100, 3 seeds, 50 000 steps (minutes on CPU, not timed here)",
                                 (10, 100), (0, 1, 2), 50_000, 0.05, 0.05),
}


def _train(width: int, seed: int, method: str, plan: SolutionSpaceBudget, data) -> dict[str, Any]:
    model = two_layer(width, 1, generator=torch.Generator().manual_seed(seed)).double()
    problem = network_problem(f"width {width}", model, data.x, data.y)
    trajectory = run_flat(problem, eta=plan.lr, rho=plan.rho if method == "sam" else 0.0, batch_size=problem.n,
                          n_steps=plan.steps, record_every=max(1, plan.steps // 50), normalized=True,
                          generator=torch.Generator().manual_seed(seed))
    w = trajectory.final_params
    hessian = torch.autograd.functional.hessian(problem.loss, w)
    with torch.no_grad():
        function = predict(model, w, data.x_test)
    return {
        "width": width, "seed": seed, "method": method, "n_params": w.numel(),
        "train_loss": trajectory.loss[-1], "test_loss": float(((function - data.y_test.reshape(-1)) ** 2).mean() / 2),
        "sharpness": float(torch.linalg.eigvalsh(hessian)[-1]),
        "total_variation": float((function[1:] - function[:-1]).abs().sum()),
        "function": function.tolist(), "params": w.tolist(),
        "loss_curve": {"steps": trajectory.steps, "loss": trajectory.loss},
    }


def run_solution_space(budget: str, out: str | Path, on_progress: Progress | None = None) -> Path:
    """Train and compare GD and SAM at every width and seed of `budget`; write the report into `out`."""
    plan = pick_budget(BUDGETS, budget, "solution-space")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress = on_progress or (lambda line: None)
    started = time.perf_counter()
    data = sine_problem(plan.n, plan.grid, 0.0, 1.0, torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = []
    try:
        for width in plan.widths:
            for seed in plan.seeds:
                for method in ("gd", "sam"):
                    progress(f"width {width}, seed {seed}: {method.upper()}")
                    runs.append(_train(width, seed, method, plan, data))
    finally:
        torch.set_num_threads(threads)
    pairs = _pairs(runs)
    summary = _summary(pairs)
    header = standard_header("solution-space", budget, plan.description, out, time.perf_counter() - started)
    notes = [f"Paper (arXiv 2311.17539): {PAPER_CLAIM}.", *_verdict(summary),
             "distance = RMS over the grid of f_GD − f_SAM; relative = that over the RMS of f_GD. Sharpness = λ_max "
             "of the exact Hessian of the mean training loss ½(f − y)² at the end point.",
             "SAM is normalized SAM (ε = ρ∇f/‖∇f‖) with full batches; GD is the same loop at ρ = 0."]
    write_json(out / "results.json", {"title": TITLE, "budget": budget, "header": header, "notes": notes,
                                      "paper": PAPER_CLAIM, "plan": plan.__dict__,
                                      "x": data.x_test.reshape(-1).tolist(),
                                      "x_train": data.x.reshape(-1).tolist(), "y_train": data.y.reshape(-1).tolist(),
                                      "summary": summary.to_dict(orient="records"),
                                      "pairs": pairs.to_dict(orient="records"), "runs": runs})
    sections = [ReportSection("GD vs SAM by width (mean ± std over seeds)",
                              "One row per width; per-seed rows below.", summary,
                              [_functions_plot(runs, data, width) for width in plan.widths]),
                ReportSection("Per seed", "GD and SAM from the same initialization.", pairs)]
    return write_pages(out, title=TITLE, header=header, notes=notes, sections=sections)


def _pairs(runs: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for gd in (r for r in runs if r["method"] == "gd"):
        sam = next(r for r in runs if r["method"] == "sam" and (r["width"], r["seed"]) == (gd["width"], gd["seed"]))
        f_gd, f_sam = torch.tensor(gd["function"]), torch.tensor(sam["function"])
        distance = float(((f_gd - f_sam) ** 2).mean().sqrt())
        rows.append({"width": gd["width"], "seed": gd["seed"], "n_params": gd["n_params"], "distance": distance,
                     "relative_distance": distance / float((f_gd**2).mean().sqrt()),
                     **{f"{m}_{k}": r[k] for m, r in (("gd", gd), ("sam", sam))
                        for k in ("sharpness", "train_loss", "test_loss", "total_variation")}})
    return pd.DataFrame(rows)


def _summary(pairs: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in pairs.columns if c not in ("width", "seed", "n_params")]
    grouped = pairs.groupby(["width", "n_params"], sort=True)[columns]
    mean, std = grouped.mean().add_suffix("_mean"), grouped.std(ddof=1).add_suffix("_std")
    keep = [f"{c}_{s}" for c in ("distance", "relative_distance", "gd_sharpness", "sam_sharpness",
                                 "gd_total_variation", "sam_total_variation", "gd_train_loss", "sam_train_loss")
            for s in ("mean", "std")]
    return pd.concat([mean, std], axis=1)[keep].reset_index()


def _verdict(summary: pd.DataFrame) -> list[str]:
    if len(summary) < 2:
        return []
    small, large = summary.iloc[0], summary.iloc[-1]
    grows = large["relative_distance_mean"] > small["relative_distance_mean"]
    return [f"Measured: relative GD–SAM distance {small['relative_distance_mean']:.3g} at width "
            f"{int(small['width'])} vs {large['relative_distance_mean']:.3g} at width {int(large['width'])} — "
            + ("larger for the larger network, as the paper reports." if grows else
               "NOT larger for the larger network: this budget does not reproduce the paper's picture."),
            f"SAM/GD sharpness ratio: {small['sam_sharpness_mean'] / small['gd_sharpness_mean']:.3g} (width "
            f"{int(small['width'])}), {large['sam_sharpness_mean'] / large['gd_sharpness_mean']:.3g} (width "
            f"{int(large['width'])})."]


def _functions_plot(runs: list[dict[str, Any]], data, width: int) -> Plot:
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    x = data.x_test.reshape(-1).tolist()
    rows = []
    for run in (r for r in runs if r["width"] == width):
        color = COLORS[0] if run["method"] == "gd" else COLORS[1]
        ax.plot(x, run["function"], color=color, linestyle="-" if run["method"] == "gd" else "--", alpha=0.8,
                label=f"{run['method'].upper()}" if run["seed"] == runs[0]["seed"] else None)
        rows += [{"method": run["method"], "seed": run["seed"], "x": a, "f": b} for a, b in zip(x, run["function"])]
    ax.scatter(data.x.reshape(-1), data.y.reshape(-1), color="black", s=12, zorder=3, label="training points")
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)")
    ax.set_title(f"width {width}: learned functions (every seed)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return Plot(f"functions-width-{width}", f"learned functions, width {width}", fig, pd.DataFrame(rows))
