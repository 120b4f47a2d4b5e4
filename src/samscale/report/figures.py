"""Figures of a study: gain, ρ*, absolute metrics, training loss, ρ sweeps and analyses against model size.

Each builder returns a `Plot`: the matplotlib figure together with the table of every number it draws. Figures use
the Agg canvas (no pyplot, no global state) and are saved as PNG and SVG byte-for-byte reproducibly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from samscale.fileio import write_with
from samscale.names import check_name
from samscale.selection.select import ARMS, SelectionRule, analysis_names
from samscale.spec.metric import Metric

FIGSIZE = (6.0, 4.0)
DPI = 100
COLORS = matplotlib.colormaps["tab10"].colors
ARM_STYLE = {"baseline": "--", "treatment": "-"}
def params_label(rule: SelectionRule) -> str:
    """The x-axis label: all parameters, or the non-zero ones (`selection.params: nonzero`)."""
    counted = "non-zero parameters" if rule.params == "nonzero" else "parameters"
    return f"number of {counted} (log scale)"
_SAVE_RC = {"svg.fonttype": "path"}
_ANALYSIS_LABELS = {
    "lambda_max": "λ_max(H), top Hessian eigenvalue",
    "trace": "tr(H), Hessian trace",
    "s2": "s₂, Hessian non-uniformity",
    "s3": "s₃, Hessian non-uniformity",
    "s4": "s₄, Hessian non-uniformity",
}


@dataclass(frozen=True)
class Plot:
    """A figure, its file stem and title, and the table of every number it shows."""

    name: str
    title: str
    figure: Figure
    table: pd.DataFrame


def arm_label(rule: SelectionRule, arm: str) -> str:
    """Short legend name of an arm ('baseline' or 'treatment'): its entry in `rule.labels`, else made from its
    filter ({'optim.name': 'sam'} → 'SAM')."""
    if arm in rule.labels:
        return rule.labels[arm]
    parts = []
    for column, value in getattr(rule, arm).items():
        if isinstance(value, str):
            parts.append(value.upper())
        else:
            parts.append(f"{column.rsplit('.', 1)[-1]}={value}")
    return " ".join(parts)


def metric_label(metric: str) -> str:
    """Axis text of a metric with its unit: 'test_acc' → 'test accuracy (%)'."""
    return Metric(metric).label()


def gain_label(rule: SelectionRule) -> str:
    """Axis text of the gain, in the direction that makes positive mean 'treatment better'."""
    treat, base = arm_label(rule, "treatment"), arm_label(rule, "baseline")
    measure = rule.measure
    if measure.percent:
        return f"{treat} − {base} {measure.label().removesuffix(' (%)')} (percentage points)"
    return f"{treat} − {base} {measure.label()}" if measure.higher_is_better else f"{base} − {treat} {measure.label()}"


def epoch_label(rule: SelectionRule) -> str:
    """Which epoch the metrics come from."""
    return "final epoch" if rule.epoch == "final" else "best-validation epoch (early stopping)"


def build_plots(
    summary: pd.DataFrame,
    selected: pd.DataFrame,
    sweep: pd.DataFrame,
    rule: SelectionRule,
    paper: pd.DataFrame | None = None,
) -> list[Plot]:
    """Every figure the data supports, in report order; figures with nothing to draw are left out."""
    arms = " vs ".join(arm_label(rule, arm) for arm in ARMS)
    plots = [gain_plot(summary, selected, rule, paper)]
    plots += [tuned_plot(summary, selected, rule, column) for column in rule.tune]
    plots.append(arms_plot(summary, rule, rule.metric, metric_label(rule.metric) + ", mean ± std over seeds",
                           f"{arms}: {metric_label(rule.metric).split(' (')[0]} ({epoch_label(rule)})"))
    plots.append(arms_plot(summary, rule, "train_loss", "final training loss (log scale)",
                           f"{arms}: final training loss (did it interpolate?)", log_y=True))
    if rule.tune:
        plots.append(sweep_plot(sweep, rule))
    for column in analysis_names(selected):
        name = column.split(".", 1)[1]
        plots.append(arms_plot(summary, rule, column, _ANALYSIS_LABELS.get(name, name) + ", mean ± std",
                               f"{arms}: {name} at the selected runs' minima", log_y=True))
    return [plot for plot in plots if plot is not None]


def save_plot(plot: Plot, directory: str | Path) -> tuple[Path, Path]:
    """Write the figure as `<name>.png` and `<name>.svg` (no timestamps, fixed SVG ids) and return both paths."""
    directory = Path(directory)
    check_name(plot.name, "figure name")  # names can come from the run store; they never leave `directory`
    directory.mkdir(parents=True, exist_ok=True)
    png, svg = directory / f"{plot.name}.png", directory / f"{plot.name}.svg"
    with matplotlib.rc_context({**_SAVE_RC, "svg.hashsalt": f"samscale-{plot.name}"}):  # ids unique per figure
        write_with(png, lambda out: plot.figure.savefig(out, format="png", dpi=DPI, metadata={"Software": None}))
        write_with(svg, lambda out: plot.figure.savefig(out, format="svg", metadata={"Date": None}))
    return png, svg


# -- the figures ---------------------------------------------------------------------------------------------------
def gain_plot(summary: pd.DataFrame, selected: pd.DataFrame, rule: SelectionRule,
              paper: pd.DataFrame | None = None) -> Plot | None:
    """Gain vs #params: mean line, mean ± std band, faint per-seed points, hollow partial sizes, paper values."""
    extra = [c for c in ("default_gain_mean", "null_gain_mean", "null_p_value") if c in summary]
    table = with_paper(summary[[*rule.group_by, rule.size_key, "n_params", "n_seeds", "gain_mean", "gain_std",
                                "gain_ci95", *extra, "gain_seeds", "partial"]], paper, rule)
    drawn = _drawable(summary, "gain_mean")
    if drawn.empty:
        return None
    fig, ax = _axes()
    default = ", ".join(f"{'ρ' if c == 'optim.rho' else c.rsplit('.', 1)[-1]} = {v:g}"
                        for c, v in rule.default.items())
    for color, (label, rows) in zip(_colors(), _groups(drawn, rule)):
        _band(ax, rows, "gain_mean", "gain_std", color=color, label=label or "tuned: mean ± std over seeds")
        seeds = _drawable(_same_group(selected, rows, rule), "gain")
        ax.scatter(seeds["n_params"], seeds["gain"], s=10, color=color, alpha=0.3, linewidths=0)
        for column, style, text in (("default_gain_mean", "--", f"untuned {default}"),
                                    ("null_gain_mean", ":", "expected under no effect")):
            line = _drawable(rows, column).sort_values("n_params")
            if len(line):
                ax.plot(line["n_params"], line[column].astype(float), linestyle=style, color=color, alpha=0.8,
                        label=f"{text}{' ' + label if label else ''}")
    if paper is not None and "paper_gain" in table:
        _paper_points(ax, table)
    ax.axhline(0.0, color="0.5", linestyle=":", linewidth=1)
    _finish(ax, params_label(rule), gain_label(rule), f"Gain vs model size ({epoch_label(rule)})", drawn)
    return Plot("gain_vs_params", "Gain vs number of parameters", fig, table)


def tuned_plot(summary: pd.DataFrame, selected: pd.DataFrame, rule: SelectionRule, column: str) -> Plot | None:
    """Value of one tuned hyperparameter chosen per size (on the seed-mean validation score) vs #params."""
    star = rule.stars[rule.tune.index(column)]
    table = summary[[*rule.group_by, rule.size_key, "n_params", star, "partial"]]
    drawn = _drawable(summary, star)
    if drawn.empty:
        return None
    symbol = "ρ*" if column == "optim.rho" else f"{column} chosen"
    fig, ax = _axes()
    for color, (label, rows) in zip(_colors(), _groups(drawn, rule)):
        _band(ax, rows, star, None, color=color, label=label or "chosen per size")
    values = pd.to_numeric(drawn[star], errors="coerce")
    log = bool((values > 0).all())
    if log:
        ax.set_yscale("log")
    _finish(ax, params_label(rule), f"{symbol} chosen on seed-mean validation{' (log scale)' if log else ''}",
            f"{symbol} vs model size", drawn)
    return Plot(f"{star}_vs_params", f"{symbol} vs number of parameters", fig, table)


def arms_plot(summary: pd.DataFrame, rule: SelectionRule, name: str, ylabel: str, title: str,
              log_y: bool = False) -> Plot | None:
    """Baseline (dashed) and treatment (solid) mean ± std of one per-run quantity vs #params."""
    columns = [f"{arm}_{name}_{stat}" for arm in ARMS for stat in ("mean", "std")]
    table = summary[[*rule.group_by, rule.size_key, "n_params", *columns, "partial"]]
    drawn = _drawable(summary, *columns[::2], how="any")
    if drawn.empty:
        return None
    fig, ax = _axes()
    colors = _colors()
    for label, rows in _groups(drawn, rule):
        group_color = next(colors)  # one colour per group; without groups, one per arm
        for arm in ARMS:
            color = group_color if rule.group_by else COLORS[ARMS.index(arm)]
            legend = f"{arm_label(rule, arm)}{' ' + label if label else ''}"
            _band(ax, _drawable(rows, f"{arm}_{name}_mean"), f"{arm}_{name}_mean", f"{arm}_{name}_std",
                  color=color, label=legend, linestyle=ARM_STYLE[arm])
    values = drawn[columns[::2]].to_numpy(dtype=float)
    if log_y and (values[np.isfinite(values)] > 0).all():
        ax.set_yscale("log")
    elif log_y:
        ylabel = ylabel.replace(" (log scale)", "")
    _finish(ax, params_label(rule), ylabel, title, drawn)
    stem = name.replace("analysis.", "").replace(".", "_")
    return Plot(f"{stem}_vs_params", title, fig, table)


def sweep_plot(sweep: pd.DataFrame, rule: SelectionRule) -> Plot | None:
    """Validation score vs the first tuned hyperparameter, one line per size, one panel per group."""
    x, y = rule.tune[0], f"{rule.select_by}_mean"
    drawn = _drawable(sweep, y, x)
    if drawn.empty:
        return None
    groups = list(_groups(drawn, rule))
    ncols = min(len(groups), 3)
    fig = new_figure(ncols, math.ceil(len(groups) / ncols))
    log = bool((drawn[x].astype(float) > 0).all())
    symbol = "ρ" if x == "optim.rho" else x
    for index, (label, rows) in enumerate(groups, start=1):
        ax = fig.add_subplot(math.ceil(len(groups) / ncols), ncols, index)
        lines = [rule.size_key, *rule.tune[1:]]
        keyed = rows.groupby(lines, dropna=False, sort=False)
        cmap = matplotlib.colormaps["viridis"]
        for rank, (key, line) in enumerate(sorted(keyed, key=lambda item: _first(item[1]["n_params"]))):
            text = ", ".join(f"{c.rsplit('.', 1)[-1]}={v}" for c, v in zip(lines, key))
            text += f" ({_first(line['n_params']):,.0f} params)"
            color = cmap(rank / max(len(keyed) - 1, 1))
            _band(ax, line, y, f"{rule.select_by}_std", color=color, label=text, x=x)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(f"{symbol}{' (log scale)' if log else ''}")
        ax.set_ylabel(f"{metric_label(rule.select_by)}, mean ± std over seeds")
        ax.set_title(f"{metric_label(rule.select_by).split(' (')[0]} vs {symbol}{': ' + label if label else ''}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    title = f"{metric_label(rule.select_by).split(' (')[0].capitalize()} vs {symbol} per size"
    return Plot(f"{x.rsplit('.', 1)[-1]}_sweep", title, fig, sweep)


def with_paper(table: pd.DataFrame, paper: pd.DataFrame | None, rule: SelectionRule) -> pd.DataFrame:
    """Our table with the paper's value beside each matching size; paper-only sizes are appended as rows."""
    if paper is None or paper.empty:
        return table.reset_index(drop=True)
    theirs = paper.rename(columns={"gain": "paper_gain", "gain_low": "paper_low", "gain_high": "paper_high",
                                   "note": "paper_note", "n_params": "paper_n_params", "size": rule.size_key})
    theirs = theirs.drop(columns=["unit", "kind"], errors="ignore")
    theirs["_key"] = [_size_key(v, f"paper-{i}") for i, v in enumerate(theirs[rule.size_key])]
    ours = table.assign(_key=[_size_key(v, f"ours-{i}") for i, v in enumerate(table[rule.size_key])])
    merged = ours.merge(theirs.drop(columns=[rule.size_key]), on="_key", how="left")
    extra = theirs[~theirs["_key"].isin(ours["_key"])].assign(n_params=lambda f: f["paper_n_params"])
    if len(extra):
        merged = pd.concat([merged, extra], ignore_index=True)
        sizes = pd.to_numeric(merged[rule.size_key], errors="coerce")
        if sizes.notna().sum() == merged[rule.size_key].notna().sum():  # numeric ladder: paper sizes slot in
            merged = merged.assign(_key=sizes).sort_values([*rule.group_by, "_key"], kind="mergesort",
                                                           na_position="last")
    return merged.drop(columns=["_key", "paper_n_params"]).reset_index(drop=True).infer_objects()


# -- shared drawing helpers ----------------------------------------------------------------------------------------
def new_figure(ncols: int = 1, nrows: int = 1) -> Figure:
    """A figure of ncols × nrows panels on the Agg canvas, with fixed margins (cheaper than a layout engine)."""
    width, height = FIGSIZE[0] * ncols, FIGSIZE[1] * nrows
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.8 / width, right=1 - 0.15 / width, bottom=0.55 / height, top=1 - 0.35 / height,
                        wspace=0.25, hspace=0.35)
    return fig


def _axes():
    fig = new_figure()
    ax = fig.add_subplot()
    ax.set_xscale("log")
    return fig, ax


def _band(ax, rows: pd.DataFrame, mean: str, std: str | None, *, color, label: str, linestyle: str = "-",
          x: str = "n_params") -> None:
    """Mean line with a mean ± std band; markers filled for complete sizes and hollow for partial ones."""
    rows = rows.sort_values(x)
    xs, ys = rows[x].to_numpy(dtype=float), rows[mean].to_numpy(dtype=float)
    ax.plot(xs, ys, linestyle=linestyle, color=color, label=label)
    if std is not None:
        spread = np.nan_to_num(rows[std].to_numpy(dtype=float))
        ax.fill_between(xs, ys - spread, ys + spread, color=color, alpha=0.15, linewidth=0)
    partial = rows["partial"].to_numpy(dtype=bool) if "partial" in rows else np.zeros(len(rows), dtype=bool)
    ax.scatter(xs[~partial], ys[~partial], s=22, color=color, zorder=3)
    ax.scatter(xs[partial], ys[partial], s=22, facecolors="white", edgecolors=color, zorder=3)


def _paper_points(ax, table: pd.DataFrame) -> None:
    points = table.dropna(subset=["paper_gain", "n_params"]).drop_duplicates(subset=["n_params", "paper_gain"])
    if points.empty:
        return
    columns = ("n_params", "paper_gain", "paper_low", "paper_high")
    x, gain, low, high = (points[c].to_numpy(dtype=float) for c in columns)
    ax.errorbar(x, gain, yerr=[gain - low, high - gain], fmt="D", color="black", markersize=5,
                capsize=3, label="paper (Shin et al.)", zorder=4)


def _finish(ax, xlabel: str, ylabel: str, title: str, drawn: pd.DataFrame) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if "partial" in drawn and drawn["partial"].any():
        handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="white", color="0.3"))
        labels.append("partial: runs missing")
    if handles:
        ax.legend(handles, labels, fontsize=7)


def _drawable(frame: pd.DataFrame, *columns: str, how: str = "all") -> pd.DataFrame:
    """Rows with a positive n_params and finite values in the given columns (all of them, or any)."""
    if frame.empty or any(c not in frame for c in columns):
        return frame.iloc[0:0]
    values = np.isfinite(frame[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float))
    finite = values.all(axis=1) if how == "all" else values.any(axis=1)
    n_params = pd.to_numeric(frame["n_params"], errors="coerce")
    return frame[finite & (n_params > 0).to_numpy()]


def _groups(frame: pd.DataFrame, rule: SelectionRule) -> Iterator[tuple[str, pd.DataFrame]]:
    """(legend label, rows) per group_by value; one unlabeled group when there is no group_by."""
    if not rule.group_by:
        yield "", frame
        return
    for key, rows in frame.groupby(rule.group_by, dropna=False, sort=True):
        yield ", ".join(f"{c.rsplit('.', 1)[-1]}={v}" for c, v in zip(rule.group_by, key)), rows


def _same_group(frame: pd.DataFrame, rows: pd.DataFrame, rule: SelectionRule) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    for column in rule.group_by:
        value = rows[column].iloc[0]
        mask &= frame[column].isna() if pd.isna(value) else frame[column] == value
    return frame[mask]


def _colors():
    while True:
        yield from COLORS


def _first(values: pd.Series) -> float:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return float(numbers.iloc[0]) if len(numbers) else math.inf


def _size_key(value: Any, fallback: str) -> str:
    """A merge key for a size: numbers compared as rounded floats, missing sizes never matching anything."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return fallback
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return f"number:{round(float(value), 9)!r}"
    return f"text:{value}"
