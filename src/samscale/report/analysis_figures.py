"""Figures of one model's curvature analysis: top Hessian eigenvalues (bars) and the spectral density."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from samscale.report.figures import FIGSIZE, Plot, save_plot


def eigenvalue_bars(eigenvalues: dict[str, list[float]], title: str) -> Plot:
    """Grouped bars of the top-k Hessian eigenvalues of one or more minima (e.g. SGD vs SAM)."""
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    width = 0.8 / max(len(eigenvalues), 1)
    rows = []
    for i, (label, values) in enumerate(eigenvalues.items()):
        positions = [k + i * width for k in range(len(values))]
        ax.bar(positions, values, width=width, label=label)
        rows += [{"minimum": label, "rank": k + 1, "eigenvalue": v} for k, v in enumerate(values)]
    ax.set_xticks([k + 0.4 - width / 2 for k in range(max(len(v) for v in eigenvalues.values()))])
    ax.set_xticklabels([str(k + 1) for k in range(max(len(v) for v in eigenvalues.values()))])
    ax.set_xlabel("eigenvalue rank")
    ax.set_ylabel("Hessian eigenvalue")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return Plot("eigenvalues", title, fig, pd.DataFrame(rows))


def density_plot(grid: list[float], density: list[float], title: str) -> Plot:
    """Spectral density of the Hessian (stochastic Lanczos quadrature), log-scaled density axis."""
    fig = Figure(figsize=FIGSIZE)
    ax = fig.add_subplot()
    ax.semilogy(grid, [max(d, 1e-12) for d in density])
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.set_title(title)
    fig.tight_layout()
    return Plot("density", title, fig, pd.DataFrame({"eigenvalue": grid, "density": density}))


def write_analysis_figures(report: dict[str, Any], out: str | Path, title: str) -> list[Path]:
    """Save the figures an `analyze` report supports (eigenvalue bars, density) under `out`; returns PNG paths."""
    plots = []
    if "lambda_max" in report:
        plots.append(eigenvalue_bars({title: report["lambda_max"]["top_eigenvalues"]}, f"top Hessian eigenvalues — {title}"))
    if "density" in report:
        plots.append(density_plot(report["density"]["grid"], report["density"]["density"], f"Hessian spectrum — {title}"))
    return [save_plot(plot, out)[0] for plot in plots]
