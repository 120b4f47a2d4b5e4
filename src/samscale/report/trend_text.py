"""Plain sentences for the report header: the trend of the gain with size, the untuned default, the null."""
from __future__ import annotations

from typing import Any

import pandas as pd

from samscale.report.columns import axis_label
from samscale.report.figures import arm_label
from samscale.selection.select import edge_name
from samscale.selection.trend import MIN_SEEDS, MIN_SIZES
from samscale.spec.study import SelectionRule

TOO_FEW = "too few sizes/seeds to show a trend"


def trend_sentences(trend: dict[str, Any], rule: SelectionRule) -> dict[str, str]:
    """One header row per group of trend.json: 'trend' or 'trend (label noise = 0.2)' → a sentence."""
    rows = {}
    for entry in trend["groups"]:
        group = ", ".join(f"{axis_label(c)} = {v}" for c, v in entry["group"].items())
        rows[f"trend ({group})" if group else "trend"] = trend_sentence(entry, trend.get("unit", "pp"))
    return rows


def trend_sentence(entry: dict[str, Any], unit: str) -> str:
    """What one trend entry says, in words: only what its calibrated numbers (the slope's Welch–Satterthwaite
    interval, the exact rank test) support, and why not more."""
    sizes, seeds = entry["n_sizes"], entry["n_seeds"]
    if entry.get("slope_per_decade") is None:
        return (f"{TOO_FEW} ({sizes} size{'s' * (sizes != 1)} with results, {seeds} seed{'s' * (seeds != 1)} at "
                f"the thinnest; needs ≥ {MIN_SIZES} sizes and ≥ {MIN_SEEDS} seeds per size).")
    spearman, p_value, slope = entry["spearman"], entry["p_value"], entry["slope_per_decade"]
    correlation = ("Spearman correlation undefined (constant gains)" if spearman is None else
                   f"Spearman correlation of the gain with #parameters {spearman:+.2f} (exact permutation p = "
                   f"{p_value:.3f})")
    if entry["slope_ci95"] is None:
        interval = "no interval"
    else:
        low, high = entry["slope_ci95"]
        interval = f"95% interval {low:+.3f} to {high:+.3f}"
    sign = "positive" if slope > 0 else "negative"
    kind = entry.get("verdict", "no_trend")
    includes = "includes 0" if entry["slope_ci95"] is not None else "cannot be computed"
    verdict = {
        "grows": "the gain grows with size: the slope's 95% interval excludes 0 and the rank correlation is "
                 "significant",
        "shrinks": "the gain shrinks with size: the slope's 95% interval excludes 0 and the rank correlation is "
                   "significant",
        "slope_only": f"the fitted slope is {sign} (its 95% interval excludes 0), but the rank correlation is not "
                      "significant, so a steady rise or fall with size is not shown",
        "ranks_only": f"the rank correlation is significant but the slope's 95% interval {includes}",
        "no_trend": f"no trend shown: the slope's 95% interval {includes} and the rank correlation is not "
                    "significant",
    }[kind]
    note = f" Note: {entry['note']}." if entry.get("note") else ""
    return (f"{verdict}. {correlation} over {sizes} sizes; slope {slope:+.3f} {unit} per tenfold more parameters "
            f"({interval}; Welch–Satterthwaite over ≥ {seeds} seeds per size).{note}")


def default_text(rule: SelectionRule, summary: pd.DataFrame) -> str:
    """Which untuned setting the report shows beside the tuned one, or why it cannot."""
    if not rule.default:
        return "none set in the selection rule (`default`), so no untuned column"
    setting = ", ".join(f"{axis_label(c)} = {v:g}" for c, v in rule.default.items())
    if len(summary) and "default_in_grid" in summary and not summary["default_in_grid"].all():
        if not summary["default_in_grid"].any():
            return f"{setting} is not in this study's grid, so the untuned column is empty"
        return f"{setting} is missing from the grid at some sizes; its column is empty there"
    return f"{setting}, not tuned: its gain shows what tuning adds"


def null_text(permutations: int, rule: SelectionRule) -> str:
    """How the no-effect expectation is computed."""
    tuned = " and ".join(axis_label(c) for c in rule.tune) or "setting"
    return (f"the tuned gain expected with no effect, from {permutations} within-seed permutations of the runs "
            f"between {arm_label(rule, 'baseline')} and every {tuned} (whole selection redone each time; fewer for "
            "very large studies); "
            "p (permutation) is the one-sided share of shuffles with a gain at least the observed one")


def edge_texts(summary: pd.DataFrame, rule: SelectionRule) -> dict[str, str]:
    """Header rows for tuned values chosen at the edge of the values tried at a size: the optimum may lie beyond."""
    rows = {}
    for column, star in zip(rule.tune, rule.stars):
        edge = edge_name(star)
        if summary.empty or edge not in summary:
            continue
        at_edge = summary[summary[edge].isin(["largest tried", "smallest tried"])]
        if at_edge.empty:
            continue
        name = axis_label(column)
        where = []
        for _, row in at_edge.iterrows():
            cell = ", ".join(f"{axis_label(c)} = {row[c]}" for c in [rule.size_key, *rule.group_by])
            where.append(f"{name}* = {row[star]:g} is the {row[edge].split()[0]} {name} tried at {cell}")
        rows[f"{name}* at the grid edge"] = (
            "; ".join(where) + ": the optimum may lie beyond the grid, so the tuned gain there may be understated")
    return rows
