"""`samscale reproduce linearized`: SAM vs SGD on the linearized model f(w₀) + J(w₀)(w − w₀), beside the same network
trained normally (arXiv 2311.17539, the linearized ablation: in the linearized regime SAM trails SGD by more than 10 %).

The network is an MLP of the MNIST ladder (hidden k × (300, 100)) on an MNIST training subset; the linearized model
is evaluated with one forward-mode product per batch (torch.func.jvp; no Jacobian is materialized). SGD and
normalized SAM (base: SGD with momentum and the MNIST protocol's coupled weight decay λw, added to the gradient
after SAM's ascent as the base optimizer does, for both models) share lr, weight decay, batch size, epochs and
initialization. SAM runs at every ρ of one grid for both models; ρ is chosen per model on the seed-mean accuracy
of a validation split carved from the training digits, never on test. Reported: test accuracy on the full test set
of each (model, optimizer), and SAM(ρ*) − SGD per model with its 95 % Student-t interval over seeds
(`samscale.selection.stats.grouped_stats`), in points and relative to SGD.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.func import functional_call, grad, jvp
from torch.nn import functional as F

from samscale.data import DatasetUnavailable, load_dataset
from samscale.errors import ConfigError
from samscale.experiments.common import Progress, pick_budget, standard_header, write_json
from samscale.experiments.stability.report import ReportSection, write_pages
from samscale.models.mlp import mlp
from samscale.report.figures import COLORS, FIGSIZE, Plot
from samscale.selection.stats import grouped_stats

TITLE = "samscale — linearized: SAM vs SGD on the linearized network and on the network itself"
PAPER_CLAIM = "in the linearized (NTK) regime SAM's benefit disappears: SAM trails SGD by more than 10 %"
CLAIM_THRESHOLD = -10.0  # SAM − SGD, in % of SGD's accuracy (or in points: both readings are tested)
Params = dict[str, Tensor]


@dataclass(frozen=True)
class LinearizedBudget:
    """Training subset and carved validation digits, test digits (None: the full 10k), MLP size k, epochs, batch,
    lr, momentum, weight decay, the ρ grid both models are tuned over, and seeds."""

    description: str
    n_train: int
    n_val: int
    n_test: int | None
    size: float
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    rhos: tuple[float, ...]
    seeds: tuple[int, ...]


BUDGETS = {
    "smoke": LinearizedBudget("seconds: 128 digits (64 validation), k = 0.1, 1 epoch, ρ ∈ {0.05}, 1 seed, 200 test "
                              "digits — checks the pipeline", 128, 64, 200, 0.1, 1, 64, 0.1, 0.9, 1e-4, (0.05,), (0,)),
    "cpu": LinearizedBudget("2,000 training digits and 1,000 validation digits carved from the rest, MLP k = 0.25 "
                            "(75, 25), 10 epochs, batch 64, lr 0.1, momentum 0.9, weight decay 1e-4 (the MNIST "
                            "protocol's), ρ ∈ {0.01, 0.05, 0.2} chosen per model on validation, 3 seeds; the full "
                            "10,000 test digits", 2000, 1000, None, 0.25, 10, 64, 0.1, 0.9, 1e-4, (0.01, 0.05, 0.2),
                            (0, 1, 2)),
    "paper": LinearizedBudget("10,000 digits (5,000 validation), MLP k = 1 (300, 100), 30 epochs, batch 128, "
                              "ρ ∈ {0.01, 0.02, 0.05, 0.1, 0.2}, 5 seeds; full test set (not timed)", 10_000, 5000,
                              None, 1.0, 30, 128, 0.1, 0.9, 1e-4, (0.01, 0.02, 0.05, 0.1, 0.2), (0, 1, 2, 3, 4)),
}


def linearize(model: torch.nn.Module, params0: Params) -> Callable[[Params, Tensor], Tensor]:
    """x ↦ f(w₀; x) + J(w₀; x)(w − w₀) as a function of w, by one jvp at w₀ with tangent w − w₀."""
    def forward(params: Params, x: Tensor) -> Tensor:
        tangent = {k: params[k] - params0[k] for k in params0}
        out, change = jvp(lambda p: functional_call(model, p, (x,)), (params0,), (tangent,))
        return out + change
    return forward


def _train(forward, params: Params, data, plan: LinearizedBudget, rho: float, seed: int) -> Params:
    """Mini-batch SGD with heavy-ball momentum and coupled weight decay (g + λw); with ρ > 0, SAM replaces the data
    gradient by the one at w + ρg/‖g‖ (same batch, decay not in the ascent), as `samscale.optim.SAM` does."""
    def loss(p: Params, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(forward(p, x), y)

    gradient = grad(loss)
    velocity = {k: torch.zeros_like(v) for k, v in params.items()}
    generator = torch.Generator().manual_seed(seed)
    x_all, y_all = data.x.flatten(1), data.y
    for _ in range(plan.epochs):
        order = torch.randperm(len(y_all), generator=generator)
        for start in range(0, len(order), plan.batch_size):
            idx = order[start:start + plan.batch_size]
            x, y = x_all[idx], y_all[idx]
            g = gradient(params, x, y)
            if rho > 0:
                norm = torch.sqrt(sum((v * v).sum() for v in g.values())) + 1e-12
                g = gradient({k: params[k] + rho * g[k] / norm for k in params}, x, y)
            velocity = {k: plan.momentum * velocity[k] + g[k] + plan.weight_decay * params[k] for k in params}
            params = {k: params[k] - plan.lr * velocity[k] for k in params}
    return params


def _evaluate(forward, params: Params, split) -> dict[str, float]:
    with torch.no_grad():
        logits = torch.cat([forward(params, split.x[i:i + 1000].flatten(1)) for i in range(0, len(split.y), 1000)])
    return {"acc": float((logits.argmax(1) == split.y).float().mean() * 100),
            "loss": float(F.cross_entropy(logits, split.y))}


def _all_runs(plan: LinearizedBudget, data, test, hidden: tuple[int, ...], progress: Progress) -> list[dict]:
    """SGD and SAM at every ρ of the grid on the linearized and the standard MLP, per seed, from the seed's
    initialization."""
    rows = []
    for seed in plan.seeds:
        model = mlp(hidden, 784, 10, generator=torch.Generator().manual_seed(seed))
        params0 = {k: v.detach() for k, v in model.named_parameters()}
        forwards = {"linearized": linearize(model, params0),
                    "standard": lambda p, x, model=model: functional_call(model, p, (x,))}
        for regime, forward in forwards.items():
            for method, rho in (("sgd", 0.0), *(("sam", rho) for rho in plan.rhos)):
                progress(f"seed {seed}: {method.upper()}{f' ρ = {rho:g}' if rho else ''} on the {regime} model")
                trained = _train(forward, dict(params0), data.train, plan, rho, seed)
                rows.append({"seed": seed, "regime": regime, "method": method, "rho": rho,
                             "n_params": sum(v.numel() for v in params0.values()),
                             **{f"test_{k}": v for k, v in _evaluate(forward, trained, test).items()},
                             **{f"val_{k}": v for k, v in _evaluate(forward, trained, data.val).items()},
                             **{f"train_{k}": v for k, v in _evaluate(forward, trained, data.train).items()}})
    return rows


def run_linearized(budget: str, out: str | Path, on_progress: Progress | None = None) -> Path:
    """Train SGD and SAM on the linearized and the standard MLP at every seed of `budget`; report into `out`."""
    plan = pick_budget(BUDGETS, budget, "linearized")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress = on_progress or (lambda line: None)
    started = time.perf_counter()
    try:
        data = load_dataset("mnist", val_size=plan.n_val, train_subset=plan.n_train, augment=False)
    except DatasetUnavailable as err:
        raise ConfigError(f"the linearized experiment needs MNIST: {err}") from err
    test = data.test if plan.n_test is None else data.test.subset(torch.arange(plan.n_test))
    hidden = tuple(max(1, round(plan.size * h)) for h in (300, 100))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is as fast and leaves the other cores free
    try:
        rows = _all_runs(plan, data, test, hidden, progress)
    finally:
        torch.set_num_threads(threads)
    runs = pd.DataFrame(rows)
    chosen = choose_rho(runs)
    summary = _summary(runs, chosen)
    header = standard_header("linearized", budget, plan.description, out, time.perf_counter() - started)
    header["network"] = f"MLP 784-{hidden[0]}-{hidden[1]}-10, {rows[0]['n_params']:,} parameters; data: {data.source}"
    notes = [f"Paper (arXiv 2311.17539): {PAPER_CLAIM}.", *_verdict(summary),
             "relative gain = (SAM − SGD test accuracy) / SGD test accuracy, in %. The paper does not say whether its "
             "'10 %' is relative or in points; both are shown."]
    write_json(out / "results.json", {"title": TITLE, "budget": budget, "header": header, "notes": notes,
                                      "paper": PAPER_CLAIM, "plan": plan.__dict__, "rho_star": chosen,
                                      "summary": summary.to_dict(orient="records"),
                                      "runs": runs.to_dict(orient="records")})
    sections = [ReportSection("SAM(ρ*) − SGD per regime (mean, std and 95 % t-interval half-width over seeds)",
                              "Test accuracy in %, gains in points and relative to SGD (per seed, then averaged); "
                              "ρ* chosen per regime on seed-mean validation accuracy.", summary, [_bars(summary)]),
                ReportSection("All runs", "One row per (seed, regime, optimizer, ρ).", runs)]
    return write_pages(out, title=TITLE, header=header, notes=notes, sections=sections)


def choose_rho(runs: pd.DataFrame) -> dict[str, float]:
    """Per regime, the SAM radius of the grid with the highest seed-mean validation accuracy (ties: the smaller ρ)."""
    sam = runs[runs["method"] == "sam"].groupby(["regime", "rho"], sort=True)["val_acc"].mean().reset_index()
    return {regime: float(rows.sort_values(["val_acc", "rho"], ascending=[False, True])["rho"].iloc[0])
            for regime, rows in sam.groupby("regime", sort=False)}


def _summary(runs: pd.DataFrame, chosen: dict[str, float]) -> pd.DataFrame:
    """Per regime: SGD and SAM(ρ*) test accuracy and the per-seed gains, with mean, std and t-interval over seeds."""
    picked = runs[(runs["method"] == "sgd") | (runs["rho"] == runs["regime"].map(chosen))]
    wide = picked.pivot_table(index=["regime", "seed"], columns="method", values="test_acc").reset_index()
    wide["gain_points"] = wide["sam"] - wide["sgd"]
    wide["gain_relative_pct"] = 100 * wide["gain_points"] / wide["sgd"]
    columns = {"sgd": "sgd_test_acc", "sam": "sam_test_acc", "gain_points": "gain_points",
               "gain_relative_pct": "gain_relative_pct"}
    parts = [grouped_stats(wide[column], [wide["regime"]], prefix) for column, prefix in columns.items()]
    seeds = parts[0]["sgd_test_acc_n"].rename("seeds")
    table = pd.concat([seeds, *(part.drop(columns=[f"{prefix}_n"]) for part, prefix in zip(parts, columns.values()))],
                      axis=1)
    table.index.name = "regime"
    table = table.reset_index()
    table.insert(1, "rho_star", table["regime"].map(chosen))
    return table


def _verdict(summary: pd.DataFrame) -> list[str]:
    """One line per regime with the gain and its interval, and whether the interval supports the paper's claim."""
    by = summary.set_index("regime")
    lines = []
    for regime in by.index:
        row = by.loc[regime]
        lines.append(f"Measured, {regime} (ρ* = {row['rho_star']:g}, {int(row['seeds'])} seeds): SAM − SGD = "
                     f"{row['gain_points_mean']:+.2f} ± {row['gain_points_ci95']:.2f} points, "
                     f"{row['gain_relative_pct_mean']:+.2f} ± {row['gain_relative_pct_ci95']:.2f} % of SGD's accuracy "
                     "(mean ± 95 % t-interval half-width over seeds).")
    if "linearized" in by.index:
        row = by.loc["linearized"]
        for unit, column in (("% of SGD's accuracy", "gain_relative_pct"), ("points", "gain_points")):
            low = row[f"{column}_mean"] - row[f"{column}_ci95"]
            high = row[f"{column}_mean"] + row[f"{column}_ci95"]
            if math.isnan(low):
                verdict = "no interval with one seed, so no verdict on whether SAM trails SGD by more than 10"
            elif high < CLAIM_THRESHOLD:
                verdict = ("the interval lies below −10: it supports the paper's claim that SAM trails SGD by more "
                           "than 10")
            elif low > CLAIM_THRESHOLD:
                verdict = ("the interval lies above −10: it rules out, at this budget, the paper's claim that SAM "
                           "trails SGD by more than 10")
            else:
                verdict = "the interval reaches across −10: it cannot decide whether SAM trails SGD by more than 10"
            lines.append(f"Linearized, in {unit}: 95 % interval [{low:+.2f}, {high:+.2f}]; {verdict}.")
    return lines


def _bars(summary: pd.DataFrame) -> Plot:
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    for i, row in enumerate(summary.itertuples()):
        for j, method in enumerate(("sgd", "sam")):
            ax.bar(i + (j - 0.5) * 0.35, getattr(row, f"{method}_test_acc_mean"), width=0.35,
                   yerr=0 if math.isnan(getattr(row, f"{method}_test_acc_std")) else getattr(
                       row, f"{method}_test_acc_std"), color=COLORS[j], label=method.upper() if i == 0 else None)
    ax.set_xticks(range(len(summary)))
    ax.set_xticklabels(list(summary["regime"]))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("SGD vs SAM: linearized vs standard network", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return Plot("accuracy", "test accuracy by regime and optimizer", fig, summary)
