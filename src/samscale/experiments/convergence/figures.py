"""Figures of the convergence experiment: f − f* against iterations beside the bound's line, fitted rate vs bound,
and the PL ratio along the neural trajectories."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from samscale.report.figures import COLORS, FIGSIZE, Plot


def case_label(case: dict[str, Any]) -> str:
    """Legend text of a case: method, radius, batch size, and the problem where a group mixes problems."""
    method = case["method"].upper()
    rho = f" ρ={case['rho_fraction']:g}·ρmax" if case.get("rho_fraction") else (
        f" ρ={case['rho']:g}" if case["rho"] else "")
    eta = f" η={case['eta_factor']:g}·η(ρ)" if case.get("eta_factor", 1.0) != 1.0 else ""
    return f"{method}{rho}{eta} B={case['batch_size']} · {case['problem']}"


def gap_curves(cases: Sequence[dict[str, Any]], name: str, title: str) -> Plot:
    """log(f − f*) (relative to the start) vs iteration, one solid line per case; the bound's prediction
    gap₀·bound^t as a dashed line in the same colour where the theorem gives one."""
    fig = Figure(figsize=(FIGSIZE[0] * 1.3, FIGSIZE[1] * 1.2))
    ax = fig.add_subplot()
    rows = []
    for i, case in enumerate(cases):
        color = COLORS[i % len(COLORS)]
        steps, gaps = case["curve"]["steps"], case["curve"]["gaps"]
        relative = [g / case["initial_gap"] for g in gaps]
        shown = [(s, g) for s, g in zip(steps, relative) if g > 0 and math.isfinite(g)]
        if shown:
            ax.plot(*zip(*shown), color=color, label=case_label(case), linewidth=1.2)
        if case["bound"] is not None:
            ax.plot([0, steps[-1]], [1.0, case["bound"] ** steps[-1]], color=color, linestyle="--", linewidth=0.8)
        rows += [{"case": case_label(case), "step": s, "relative_gap": g} for s, g in zip(steps, relative)]
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("(f − f*) / (f₀ − f*), mean over runs (log)")
    ax.set_title(f"{title} (dashed: the USAM bound)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return Plot(name, title, fig, pd.DataFrame(rows, columns=["case", "step", "relative_gap"]))


def rate_scatter(cases: Sequence[dict[str, Any]]) -> Plot:
    """1 − fitted rate against 1 − bound (log–log) for every case with a bound: at or above the diagonal means the
    case contracts at least as fast as the theorem guarantees; admissible cases filled, others hollow."""
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    rows = [{"case": case_label(c), "group": c["group"], "bound": c["bound"], "fitted_rate": c["fitted_rate"],
             "admissible": c["admissible"]}
            for c in cases if c["bound"] is not None and math.isfinite(c["fitted_rate"]) and c["fitted_rate"] < 1]
    groups = list(dict.fromkeys(r["group"] for r in rows))
    for i, group in enumerate(groups):
        for admissible in (True, False):
            mine = [r for r in rows if r["group"] == group and r["admissible"] == admissible]
            if mine:
                ax.scatter([1 - r["bound"] for r in mine], [1 - r["fitted_rate"] for r in mine],
                           color=COLORS[i % len(COLORS)], facecolors=None if admissible else "none",
                           label=f"{group}{'' if admissible else ' (step not admissible)'}")
    if rows:
        low = min(min(1 - r["bound"], 1 - r["fitted_rate"]) for r in rows) / 2
        high = max(max(1 - r["bound"], 1 - r["fitted_rate"]) for r in rows) * 2
        ax.plot([low, high], [low, high], color="0.4", linestyle="--", linewidth=1, label="fitted = bound")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("1 − bound (guaranteed decrease per iteration)")
    ax.set_ylabel("1 − fitted rate (measured decrease)")
    ax.set_title("measured contraction vs the USAM bound (above the line = faster)", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return Plot("rates", "fitted contraction factor vs the bound", fig, pd.DataFrame(rows))


def pl_curves(cases: Sequence[dict[str, Any]], name: str, title: str) -> Plot:
    """The PL ratio ‖∇f‖²/(2(f − f*)) along each neural trajectory; its minimum is the empirical μ."""
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    rows = []
    for i, case in enumerate(cases):
        curve = case["pl_ratio_curve"]
        if curve["steps"]:
            ax.plot(curve["steps"], curve["gaps"], color=COLORS[i % len(COLORS)], label=case_label(case))
        rows += [{"case": case_label(case), "step": s, "pl_ratio": r} for s, r in zip(curve["steps"], curve["gaps"])]
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("‖∇f‖² / (2(f − f*)) (log)")
    ax.set_title(f"{title}: PL ratio along the trajectory (min = empirical μ)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return Plot(name, f"{title}: PL ratio", fig, pd.DataFrame(rows, columns=["case", "step", "pl_ratio"]))
