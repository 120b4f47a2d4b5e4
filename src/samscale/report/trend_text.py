"""Plain sentences for the report header: the trend of the gain with size, the untuned default, the null."""
from __future__ import annotations

from typing import Any

import pandas as pd

from samscale.report.columns import axis_label
from samscale.report.figures import arm_label
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
    """What one trend entry says, in words."""
    sizes, seeds = entry["n_sizes"], entry["n_seeds"]
    if not entry.get("enough"):
        return (f"{TOO_FEW} ({sizes} size{'s' * (sizes != 1)} with results, {seeds} seed{'s' * (seeds != 1)} at "
                f"the thinnest; needs ≥ {MIN_SIZES} sizes and ≥ {MIN_SEEDS} seeds per size).")
    spearman, p_value = entry["spearman"], entry["p_value"]
    slope, (low, high) = entry["slope_per_decade"], entry["slope_ci95"]
    correlation = ("Spearman correlation undefined (constant gains)" if spearman is None else
                   f"Spearman correlation of the gain with #parameters {spearman:+.2f} (permutation p = "
                   f"{p_value:.3f})")
    direction = "positive" if low > 0 else "negative" if high < 0 else None
    significant = p_value is not None and p_value < 0.05
    if direction and significant:
        verdict = f"the gain {'grows' if direction == 'positive' else 'shrinks'} with size"
    elif direction:
        verdict = (f"the slope is {direction} (its interval excludes 0) but the rank correlation over {sizes} sizes "
                   "is not significant")
    else:
        verdict = "no clear trend (the slope's interval includes 0)"
    return (f"{verdict}: {correlation} over {sizes} sizes; slope {slope:+.3f} {unit} per tenfold more parameters "
            f"(95% bootstrap interval {low:+.3f} to {high:+.3f}; ≥ {seeds} seeds per size).")


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
