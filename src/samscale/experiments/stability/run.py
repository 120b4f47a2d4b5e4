"""`samscale reproduce stability`: are SGD's and USAM's minima as flat and as uniform as linear stability demands?

For each problem of the budget, SGD, USAM and SAM are trained (same η and batch size, constant learning rate) to
(near) zero training loss; at each end point the curvature the theory constrains is measured on the training set —
a = λ_max(H), the top Hessian eigenvalues, and the non-uniformities s₂, s₃, s₄ — and set beside the bounds for the
η, ρ, B and n used (docs/PROTOCOL.md §6). Writes results.csv (one row per run), summary.csv (measured vs bound per
optimizer), results.json (everything, with the run specs and loss histories), figures, report.md and report.html.
Training checkpoints live under `out/runs`, so a second call reuses finished runs and only re-measures.
"""
from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from samscale.data import Dataset, DatasetUnavailable
from samscale.experiments.common import write_json
from samscale.experiments.stability.budgets import Problem, StabilityBudget, get_budget
from samscale.experiments.stability.bounds import LABELS, QUANTITIES, stability_bounds, summarize_against_bounds
from samscale.experiments.stability.figures import curvature_bars, loss_curves, optimizer_label, top_eigenvalue_bars
from samscale.experiments.stability.report import ReportSection, write_pages
from samscale.fileio import write_csv
from samscale.hessian.minimum import MinimumCurvature, measure_minimum
from samscale.spec.run import RunSpec
from samscale.train.checkpoint import load_checkpoint
from samscale.train.loop import RunResult, build_model_for, dataset_for, loss_function, train_run
from samscale.workdir import checkpoint_path

RUNS_DIR = "runs"
TITLE = "samscale — stability: sharpness and Hessian non-uniformity of SGD, USAM and SAM minima"
RUN_COLUMNS = (
    "problem", "optimizer", "seed", "eta", "rho", "batch_size", "n", "n_params", "epochs", "status",
    "train_loss", "train_acc", "test_loss", "test_acc", *QUANTITIES, *(f"bound_{q}" for q in QUANTITIES),
    "lanczos_converged", "run_id",
)
INTERPOLATION_LOSS = 1e-2  # a run ending above this training loss is reported as short of interpolation
Progress = Callable[[str], None]


def run_stability(budget: str, out: str | Path, on_progress: Progress | None = None) -> Path:
    """Train, measure and report the stability experiment at `budget` (smoke, cpu or paper) into folder `out`;
    returns the path of report.html. `on_progress` receives one short line per step."""
    plan = get_budget(budget)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress = on_progress or (lambda line: None)
    started = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        measured, skipped = _train_and_measure_all(plan, out / RUNS_DIR, progress)
    finally:
        torch.set_num_threads(threads)  # training sets the thread count of the process; give it back
    seconds = time.perf_counter() - started
    progress(f"writing the report to {out}")
    return _write_outputs(out, budget, plan, measured, skipped, seconds)


def _train_and_measure_all(plan: StabilityBudget, workdir: Path, progress: Progress) -> tuple[list[dict], list[str]]:
    """Every (problem, optimizer, seed) of the budget, trained and measured; problems without data are skipped."""
    measured, skipped = [], []
    done = 0
    for problem in plan.problems:
        try:
            dataset_for(problem.run_spec("sgd", plan.seeds[0], plan.threads))
        except DatasetUnavailable as err:
            skipped.append(f"{problem.name} was skipped: its data are not available here. {err}")
            done += len(plan.optimizers) * len(plan.seeds)
            progress(f"skipping {problem.name}: its data are not available here")
            continue
        for optimizer in plan.optimizers:
            for seed in plan.seeds:
                done += 1
                step = f"{optimizer} on {problem.name}, seed {seed} ({done}/{plan.n_runs})"
                progress(f"training {step}")
                spec = problem.run_spec(optimizer, seed, plan.threads)
                result = train_run(spec, workdir=workdir)
                progress(f"measuring the curvature of {step}")
                measured.append(_measure_run(problem, optimizer, spec, result, workdir))
    return measured, skipped


def trained_model(spec: RunSpec, dataset: Dataset, workdir: str | Path) -> nn.Module:
    """The model a finished run ended with, rebuilt from its checkpoint under `workdir` (eval mode)."""
    state = load_checkpoint(checkpoint_path(workdir, spec.run_id))
    if state is None:
        raise FileNotFoundError(f"run {spec.run_id} has no checkpoint under {workdir}")
    model = build_model_for(spec, dataset)
    model.load_state_dict(state["model"])
    return model.eval()


def _measure_run(problem: Problem, optimizer: str, spec: RunSpec, result: RunResult, workdir: Path) -> dict[str, Any]:
    """One run's record: settings, outcome, curvature at its end point and the bounds that apply to it."""
    dataset = dataset_for(spec)
    n = len(dataset.train)
    rho = problem.radius(optimizer)
    bounds = stability_bounds(optimizer, problem.lr, rho, problem.batch_size, n)
    final = result.final
    record: dict[str, Any] = {
        "problem": problem.name, "optimizer": optimizer, "seed": spec.train.seed, "eta": problem.lr, "rho": rho,
        "batch_size": problem.batch_size, "n": n, "n_params": final.get("n_params"), "epochs": problem.epochs,
        "status": result.status, "train_loss": math.nan,
        "train_acc": final.get("final_train_acc", math.nan),
        "test_loss": final.get("final_test_loss", math.nan), "test_acc": final.get("final_test_acc", math.nan),
        **dict.fromkeys(QUANTITIES, math.nan), **{f"bound_{q}": bounds[q] for q in QUANTITIES},
        "lanczos_converged": None, "run_id": spec.run_id,
    }
    curvature: MinimumCurvature | None = None
    if result.status == "complete":
        curvature = measure_minimum(
            trained_model(spec, dataset, workdir), loss_function(dataset), [(dataset.train.x, dataset.train.y)],
            top_k=problem.top_k, max_matvecs=problem.max_matvecs, seed=spec.train.seed,
        )
        record.update(train_loss=curvature.loss, sharpness=curvature.sharpness,
                      **{f"s{k}": value for k, value in curvature.s.items()},
                      lanczos_converged=curvature.sharpness_converged and all(curvature.s_converged.values()))
    details = {
        "curvature": curvature.as_dict() if curvature else None,
        "history": [{"epoch": row["epoch"], "train_loss": row["train_loss"]} for row in result.history],
        "spec": spec.model_dump(mode="json"),
        "data_source": dataset.source,
    }
    return {"record": record, "details": details}


# -- outputs ---------------------------------------------------------------------------------------------------
def _write_outputs(out: Path, budget: str, plan: StabilityBudget, measured: list[dict], skipped: list[str],
                   seconds: float) -> Path:
    runs = pd.DataFrame([m["record"] for m in measured], columns=list(RUN_COLUMNS))
    summary = summarize_against_bounds(runs)
    histories = pd.DataFrame(
        [{"problem": m["record"]["problem"], "optimizer": m["record"]["optimizer"], "seed": m["record"]["seed"],
          **row} for m in measured for row in m["details"]["history"]],
        columns=["problem", "optimizer", "seed", "epoch", "train_loss"],
    )
    write_csv(out / "results.csv", runs)
    write_csv(out / "summary.csv", summary)
    command = f"samscale reproduce stability --budget {budget} --out {out}"
    header = _header(command, budget, plan, measured, seconds)
    notes = _notes(plan, runs, skipped)
    problems = [p for p in plan.problems if p.name in set(runs["problem"])]
    payload = {
        "title": TITLE, "command": command, "budget": budget, "header": header, "notes": notes,
        "problems": [_problem_record(p, measured) for p in problems],
        "runs": [{**m["record"], **m["details"]} for m in measured],
        "summary": summary.to_dict(orient="records"),
    }
    write_json(out / "results.json", payload)
    sections = [_problem_section(p, summary, histories, measured) for p in problems]
    sections.append(ReportSection(
        "All runs", "One row per run (results.csv). Curvature is measured on the n training examples, eval mode, "
        "float64; bounds as in the tables above.", _display_runs(runs)))
    return write_pages(out, title=TITLE, header=header, notes=notes, sections=sections)


def _header(command: str, budget: str, plan: StabilityBudget, measured: list[dict], seconds: float) -> dict[str, str]:
    header = {"command": command, "budget": f"{budget}: {plan.description}",
              "seeds": ", ".join(str(s) for s in plan.seeds)}
    for problem in plan.problems:
        mine = [m for m in measured if m["record"]["problem"] == problem.name]
        if not mine:
            continue
        record = mine[0]["record"]
        radii = ", ".join(f"{optimizer_label(o)} {r:g}" for o, r in problem.rho.items())
        header[problem.name] = (
            f"{problem.title}; n = {record['n']} training examples; {record['n_params']:,} parameters; "
            f"η = {problem.lr:g}, B = {problem.batch_size}, ρ: {radii}; {problem.epochs} epochs, constant η, "
            f"momentum 0, weight decay 0; data source: {mine[0]['details']['data_source']}")
    header["measured"] = ("at the end of training, on the n training examples (eval mode, float64): the top "
                          "Hessian eigenvalues by Lanczos, and s_k = λ_max(S_k)^(1/k) by Lanczos on per-example "
                          "Hessian-vector products")
    header["wall time"] = f"{seconds:.0f} s ({plan.threads or 'default'} torch thread(s) per run)"
    header["software"] = f"torch {torch.__version__}"
    header["generated"] = dt.datetime.now().isoformat(timespec="seconds")
    return header


def _notes(plan: StabilityBudget, runs: pd.DataFrame, skipped: list[str]) -> list[str]:
    notes = list(plan.notes) + skipped
    notes += [
        "The bounds (docs/PROTOCOL.md §6; samscale.theory.stability) come from the sufficient mean-square condition "
        "λ_max(E[A_ξ²]) ≤ 1 for USAM linearized at an interpolating minimum (every example's loss minimized, "
        "per-example Hessians positive semi-definite); ρ = 0 gives SGD's. They are necessary in one dimension and "
        "bound what the sufficient condition allows in general. A minimum an optimizer can stay at should satisfy "
        "its bounds; a value above one means the end point is not such a minimum (still moving, not interpolating, "
        "or with indefinite per-example Hessians).",
        "Batch size 1 throughout: USAM's s₃ and s₄ bounds are derived for it. SGD's linear stability places no "
        "constraint on s₃, s₄ (bound inf, ratio 0).",
        "SAM is the normalized SAM of practice (ε = ρ∇f/‖∇f‖). The bounds are derived for USAM (ε = ρ∇f) only, so "
        "SAM's rows have none and are shown for comparison. Because the two ε differ in kind, USAM and SAM get "
        "separate ρ values (see the header).",
        "Cross-entropy (MNIST) has no finite minimizer: as the loss goes to 0 so does the Hessian, so MNIST values "
        "describe the point reached after the budget's epochs at equal η. The teacher–student MSE problem is "
        "over-parameterized (more parameters than examples) and has exact interpolating minima.",
        "Means over seeds with the sample standard deviation (– with a single seed). Lanczos Ritz values never "
        "exceed the largest eigenvalue, so a run stopped at the product cap under-estimates it slightly.",
    ]
    unconverged = runs["lanczos_converged"].eq(False).sum()
    if unconverged:
        notes.append(f"{unconverged} of {len(runs)} runs had a Lanczos run stop at its Hessian-product cap before "
                     "reaching the tolerance; their values are lower estimates.")
    short = runs[(runs["status"] == "complete") & (runs["train_loss"] > INTERPOLATION_LOSS)]
    if len(short):
        notes.append(f"{len(short)} run(s) ended with training loss above {INTERPOLATION_LOSS:g}, short of "
                     "interpolation, where the bounds need not hold: " + ", ".join(
                         f"{optimizer_label(r.optimizer)} on {r.problem} seed {r.seed} ({r.train_loss:.3g})"
                         for r in short.itertuples()))
    diverged = runs[runs["status"] != "complete"]
    if len(diverged):
        notes.append(f"{len(diverged)} run(s) diverged and carry no curvature: "
                     + ", ".join(f"{optimizer_label(r.optimizer)} on {r.problem} seed {r.seed}"
                                 for r in diverged.itertuples()))
    return notes


def _problem_record(problem: Problem, measured: list[dict]) -> dict[str, Any]:
    record = next(m["record"] for m in measured if m["record"]["problem"] == problem.name)
    return {"name": problem.name, "title": problem.title, "data": dict(problem.data), "model": dict(problem.model),
            "eta": problem.lr, "batch_size": problem.batch_size, "epochs": problem.epochs, "rho": dict(problem.rho),
            "n": record["n"], "n_params": record["n_params"], "top_k": problem.top_k,
            "max_matvecs": problem.max_matvecs}


def _problem_section(problem: Problem, summary: pd.DataFrame, histories: pd.DataFrame,
                     measured: list[dict]) -> ReportSection:
    table = summary[summary["problem"] == problem.name].drop(columns=["problem", "holds"])
    table = table.assign(optimizer=table["optimizer"].map(optimizer_label), quantity=table["quantity"].map(LABELS))
    table = table.rename(columns={"n_seeds": "seeds", "ratio": "mean / bound", "within_bound": "within bound"})
    plots = [curvature_bars(summary, problem.name, problem.label)]
    eigenvalues = _mean_top_eigenvalues(problem.name, measured)
    if eigenvalues:
        plots.append(top_eigenvalue_bars(eigenvalues, problem.name, problem.label))
    plots.append(loss_curves(histories, problem.name, problem.label))
    text = ("Measured at the end of training (mean ± std over seeds) against the stability bound of each "
            "optimizer; 'within bound' counts the seeds at or below it.")
    return ReportSection(problem.title, text, table.reset_index(drop=True), plots)


def _mean_top_eigenvalues(problem: str, measured: list[dict]) -> dict[str, list[float]]:
    """Rank-wise mean over seeds of the top Hessian eigenvalues, per optimizer (finished runs only)."""
    by_optimizer: dict[str, list[list[float]]] = {}
    for m in measured:
        curvature = m["details"]["curvature"]
        if m["record"]["problem"] == problem and curvature is not None:
            by_optimizer.setdefault(m["record"]["optimizer"], []).append(curvature["top_eigenvalues"])
    return {name: torch.tensor(lists, dtype=torch.float64).mean(0).tolist() for name, lists in by_optimizer.items()}


def _display_runs(runs: pd.DataFrame) -> pd.DataFrame:
    shown = runs.drop(columns=["eta", "batch_size", "epochs", "run_id"])
    return shown.assign(optimizer=shown["optimizer"].map(optimizer_label))
