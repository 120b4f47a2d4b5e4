"""Figures of the stability experiment: curvature of each optimizer's minima against its bounds, the top Hessian
eigenvalues of the minima (the paper's SGD-vs-SAM bar chart), and the training-loss curves."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from samscale.experiments.stability.bounds import LABELS, QUANTITIES
from samscale.report.analysis_figures import eigenvalue_bars
from samscale.report.figures import COLORS, FIGSIZE, Plot

OPTIMIZER_LABELS = {"sgd": "SGD", "usam": "USAM", "sam": "SAM"}


def optimizer_label(optimizer: str) -> str:
    """Display name of an optimizer: 'usam' → 'USAM'."""
    return OPTIMIZER_LABELS.get(optimizer, optimizer.upper())


def curvature_bars(summary: pd.DataFrame, problem: str, title: str) -> Plot:
    """Grouped bars of a, s₂, s₃, s₄ per optimizer (mean ± std over seeds) with each bound as a dashed mark above
    its bar; bounds that are infinite (no constraint) or not derived (NaN) are not drawn."""
    rows = summary[summary["problem"] == problem]
    optimizers = list(dict.fromkeys(rows["optimizer"]))
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    width = 0.8 / max(len(optimizers), 1)
    for i, optimizer in enumerate(optimizers):
        color = COLORS[i % len(COLORS)]
        mine = rows[rows["optimizer"] == optimizer].set_index("quantity").reindex(list(QUANTITIES))
        positions = np.arange(len(QUANTITIES)) + (i - (len(optimizers) - 1) / 2) * width
        std = np.nan_to_num(mine["std"].to_numpy(dtype=float))
        ax.bar(positions, mine["mean"].to_numpy(dtype=float), width=width, yerr=std, capsize=2, color=color,
               label=optimizer_label(optimizer))
        for x, bound in zip(positions, mine["bound"].to_numpy(dtype=float)):
            if math.isfinite(bound):
                ax.hlines(bound, x - width / 2, x + width / 2, colors=color, linestyles="--", linewidth=2)
    ax.set_xticks(range(len(QUANTITIES)))
    ax.set_xticklabels([LABELS[q] for q in QUANTITIES])
    ax.set_ylabel("value at the minimum (mean ± std over seeds)")
    ax.set_title(f"{title}: curvature at the minima vs bounds", fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", linestyle="--", linewidth=2))
    labels.append("bound (bar's colour)")
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=len(handles), frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    table = rows[["optimizer", "quantity", "mean", "std", "bound"]].reset_index(drop=True)
    return Plot(f"{problem}-curvature", f"{title}: curvature vs stability bounds", fig, table)


def top_eigenvalue_bars(eigenvalues: dict[str, list[float]], problem: str, title: str) -> Plot:
    """The paper's bar chart: top Hessian eigenvalues by rank, one bar colour per optimizer's minimum."""
    labelled = {optimizer_label(name): values for name, values in eigenvalues.items()}
    plot = eigenvalue_bars(labelled, f"{title}: top Hessian eigenvalues, mean over seeds")
    plot.figure.axes[0].title.set_fontsize(9)
    return replace(plot, name=f"{problem}-eigenvalues", title=f"{title}: top Hessian eigenvalues (mean over seeds)")


def loss_curves(histories: pd.DataFrame, problem: str, title: str) -> Plot:
    """Training loss per epoch (running mean over the epoch's clean passes, log scale), one line per run."""
    rows = histories[histories["problem"] == problem]
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    optimizers = list(dict.fromkeys(rows["optimizer"]))
    for i, optimizer in enumerate(optimizers):
        for j, (seed, run) in enumerate(rows[rows["optimizer"] == optimizer].groupby("seed", sort=True)):
            positive = run[run["train_loss"] > 0]
            ax.plot(positive["epoch"], positive["train_loss"], color=COLORS[i % len(COLORS)], alpha=0.8,
                    label=optimizer_label(optimizer) if j == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (log scale)")
    ax.set_title(f"{title}: training loss (interpolating?)", fontsize=9)
    ax.grid(True, alpha=0.3)
    if optimizers:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return Plot(f"{problem}-training-loss", f"{title}: training loss per epoch", fig,
                rows[["optimizer", "seed", "epoch", "train_loss"]].reset_index(drop=True))
