"""The ρ-law page: `samscale rho-law DIR...` over finished study folders → figure, table, rho_law.json.

The statistics are `samscale.selection.rho_law`; this module reads each study folder (its study.yaml and run
store), draws one panel per task and writes report.md, report.html and rho_law.json into a folder swapped in whole.
"""
from __future__ import annotations

import datetime as dt
import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from samscale.errors import ConfigError
from samscale.fileio import write_text
from samscale.report.figures import COLORS, Plot, new_figure, save_plot
from samscale.report.render import inline_svg
from samscale.report.study_report import replace_folder
from samscale.report.tables import html_table, markdown_table
from samscale.selection.rho_law import PREDICTORS, LawFit, rho_law
from samscale.spec.study import load_study
from samscale.store import RunStore
from samscale.workdir import store_path, study_path

PREDICTOR_LABELS = {"law": "fitted law", "constant": "constant ρ", "mup": "μP-global"}
METHOD = (
    "ρ̂* per size: vertex of the parabola in log10 ρ through the best seed-mean validation score and its two grid "
    "neighbours (kept between them); a best value at an end of the grid is censored (hollow marker). Law: OLS of "
    "log10 ρ̂* on log10 #params; 95 % Student-t interval on b (n − 2 degrees of freedom), printed only when calibrated "
    "(≥ 4 sizes, ≥ 3 grid values, no censored size). μP-global: ρ ∝ width^(−1/2), i.e. b_μP = −½ · d log10 width / "
    "d log10 #params along the ladder. Leave one size out: ρ predicted from the other sizes, rounded to the nearest "
    "grid value, scored by the validation and test accuracy (percentage points) lost against the size's best grid "
    "value chosen on validation."
)


def law_fits(dirs: list[Path]) -> list[LawFit]:
    """The fits of every task of every study folder (refused with a clear message when a folder is not a study)."""
    fits = []
    for folder in dirs:
        folder = Path(folder)
        if not study_path(folder).is_file() or not store_path(folder).is_file():
            raise ConfigError(f"{folder} is not a finished study folder (needs study.yaml and its run store); "
                              "run `samscale sweep` or `samscale reproduce` first")
        study = load_study(study_path(folder), check_runs=False)
        frame = RunStore(store_path(folder)).runs_frame(study.name)
        fits += rho_law(frame, study.selection, study.name)
    return fits


def summary_table(fits: list[LawFit]) -> pd.DataFrame:
    """One row per task: the fit, its interval (or why none), the comparisons and leave-one-size-out losses."""
    rows = []
    for fit in fits:
        row = {
            "task": fit.task,
            "ladder": fit.ladder,
            "sizes": len(fit.sizes),
            "b": fit.b,
            "b 95% CI": f"[{fit.b_ci[0]:.3g}, {fit.b_ci[1]:.3g}]" if fit.b_ci else f"none: {fit.no_interval}",
            "p (b = 0)": fit.p_b_zero,
            "b μP-global": fit.b_mup,
            "p (b = b_μP)": fit.p_b_mup,
        }
        for name in PREDICTORS:
            scores = fit.loso.get(name, {})
            row[f"LOSO val lost, {PREDICTOR_LABELS[name]}"] = scores.get("val_lost")
            row[f"LOSO test lost, {PREDICTOR_LABELS[name]}"] = scores.get("test_lost")
        rows.append(row)
    return pd.DataFrame(rows)


def sizes_table(fits: list[LawFit]) -> pd.DataFrame:
    """One row per (task, size): #params, ρ* on the grid, the interpolated ρ̂* and whether it is censored."""
    return pd.DataFrame([
        {"task": fit.task, "size": p.size, "#params": p.n_params, "ρ* (grid)": p.grid[p.best_index],
         "ρ̂* (interpolated)": 10 ** p.log_rho, "censored": p.censored,
         "best val acc": p.val[p.best_index], "test acc at ρ*": p.test[p.best_index]}
        for fit in fits for p in fit.sizes
    ])


def law_plot(fits: list[LawFit]) -> Plot:
    """One panel per task: ρ̂* against #params (log–log), the fitted law, the constant and μP-global."""
    ncols = min(3, max(1, len(fits)))
    nrows = max(1, math.ceil(len(fits) / ncols))
    fig = new_figure(ncols, nrows)
    for i, fit in enumerate(fits):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        n = np.array([p.n_params for p in fit.sizes])
        y = np.array([p.log_rho for p in fit.sizes])
        censored = np.array([p.censored for p in fit.sizes], dtype=bool)
        ax.scatter(n[~censored], 10 ** y[~censored], color=COLORS[0], zorder=3, label="ρ̂* (interpolated)")
        if censored.any():
            ax.scatter(n[censored], 10 ** y[censored], facecolors="none", edgecolors=COLORS[0], zorder=3,
                       label="ρ* at grid end")
        if fit.b is not None:
            xs = np.linspace(np.log10(n.min()), np.log10(n.max()), 50)
            label = f"law b = {fit.b:.2f}" + (f" [{fit.b_ci[0]:.2f}, {fit.b_ci[1]:.2f}]" if fit.b_ci else "")
            ax.plot(10 ** xs, 10 ** (fit.a + fit.b * xs), color=COLORS[1], label=label)
            ax.plot(10 ** xs, np.full_like(xs, 10 ** y.mean()), color=COLORS[2], linestyle=":", label="constant ρ")
            if fit.b_mup is not None:
                x = np.log10(n)
                intercept = (y - fit.b_mup * x).mean()
                ax.plot(10 ** xs, 10 ** (intercept + fit.b_mup * xs), color=COLORS[3], linestyle="--",
                        label=f"μP-global b = {fit.b_mup:.2f}")
        for rho in sorted({r for p in fit.sizes for r in p.grid}):  # the grid, after the data set the limits
            ax.axhline(rho, color="0.85", linewidth=0.8, zorder=0)
        ax.set_xlabel("#params")
        ax.set_ylabel("ρ*")
        ax.set_title(fit.task, fontsize=8)
        ax.legend(fontsize=6)
    return Plot("rho_law", "ρ* against model size", fig, sizes_table(fits))


def write_rho_law(dirs: list[Path], out: Path, *, command: str) -> Path:
    """Fit every task of the study folders and write the page into `out` (swapped in whole); returns report.html."""
    fits = law_fits(dirs)
    if not fits:
        raise ConfigError(f"no task with tuned ρ in {[str(d) for d in dirs]}")
    return replace_folder(Path(out), lambda folder: _write(folder, fits, dirs, command))


def _write(folder: Path, fits: list[LawFit], dirs: list[Path], command: str) -> Path:
    header = {"command": command, "studies": ", ".join(str(d) for d in dirs),
              "generated": dt.datetime.now().isoformat(timespec="seconds")}
    payload = {"method": METHOD, **header, "tasks": [fit.as_dict() for fit in fits]}
    write_text(folder / "rho_law.json", json.dumps(payload, indent=2, allow_nan=True) + "\n")
    _, svg = save_plot(law_plot(fits), folder)
    summary, sizes = summary_table(fits), sizes_table(fits)
    lines = ["# samscale — ρ* as a law of size", ""] + [f"- **{k}**: {v}" for k, v in header.items()]
    lines += ["", METHOD, "", "![rho law](rho_law.png)", "", "## Fits", "", markdown_table(summary),
              "", "## Sizes", "", markdown_table(sizes), ""]
    write_text(folder / "report.md", "\n".join(lines))
    page = [f"<html><head><meta charset='utf-8'><title>samscale — ρ law</title></head><body>",
            "<h1>samscale — ρ* as a law of size</h1><ul>"]
    page += [f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in header.items()]
    page += ["</ul>", f"<p>{html.escape(METHOD)}</p>", inline_svg(svg, "rho law"), "<h2>Fits</h2>",
             html_table(summary), "<h2>Sizes</h2>", html_table(sizes), "</body></html>"]
    write_text(folder / "report.html", "\n".join(page))
    return folder / "report.html"
