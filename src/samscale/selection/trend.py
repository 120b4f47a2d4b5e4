"""Does the gain grow with model size? Rank correlation and slope of the gain against log #parameters, per group.

For each group (label-noise rate, sparsity…; one group when the rule has none), over the sizes with paired seeds:
- `spearman`: Spearman's rank correlation between the seed-mean gain and the number of parameters (ranks with
  ties averaged, so the log makes no difference);
- `p_value`: two-sided permutation p-value of that correlation: the share of orderings of the gains over the sizes
  whose |correlation| is at least the observed one; exact (all n! orderings) up to EXACT_LIMIT sizes, otherwise
  estimated from PERMUTATIONS seeded random orderings as (1 + hits) / (1 + draws);
- `slope_per_decade`: least-squares slope of the seed-mean gain on log10(#parameters): gain units per tenfold
  increase in parameters;
- `slope_ci95`: 95% percentile bootstrap interval of that slope, resampling each size's seeds with replacement
  (sizes are trained independently, so their seeds are resampled independently), BOOTSTRAP draws, seeded.
A group with fewer than MIN_SIZES sizes or fewer than MIN_SEEDS paired seeds at some size gets null statistics.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from samscale.spec.study import SelectionRule

EXACT_LIMIT = 8
PERMUTATIONS = 10_000
BOOTSTRAP = 2_000
SEED = 20231129
MIN_SIZES = 3
MIN_SEEDS = 2
METHOD = (
    "Per group, over model sizes: Spearman rank correlation of the seed-mean gain (tuned setting) with the number "
    "of parameters, with a two-sided permutation p-value (exact over all orderings for up to "
    f"{EXACT_LIMIT} sizes, else {PERMUTATIONS} seeded random orderings); least-squares slope of the seed-mean "
    "gain per decade (×10) of parameters, with a 95% percentile bootstrap interval from resampling each size's "
    f"seeds ({BOOTSTRAP} seeded draws). Needs at least {MIN_SIZES} sizes and {MIN_SEEDS} seeds per size."
)


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties given their average rank."""
    values = np.asarray(values, dtype=float)
    return pd.DataFrame(values.reshape(-1, values.shape[-1])).rank(axis=1).to_numpy().reshape(values.shape)


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's correlation of x with y (last axis); y may carry leading batch axes. NaN when a side is constant."""
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(axis=-1, keepdims=True), ry - ry.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((rx**2).sum(axis=-1) * (ry**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (rx * ry).sum(axis=-1) / np.where(denominator > 0, denominator, 1), np.nan)


def spearman_p_value(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float:
    """Two-sided permutation p-value of Spearman's correlation (exact for up to EXACT_LIMIT points)."""
    observed = abs(float(spearman(x, y)))
    if math.isnan(observed):
        return math.nan
    y = np.asarray(y, dtype=float)
    if len(y) <= EXACT_LIMIT:
        orderings = y[np.array(list(itertools.permutations(range(len(y)))))]
        return float(np.mean(np.abs(spearman(x, orderings)) >= observed - 1e-12))
    orderings = rng.permuted(np.broadcast_to(y, (PERMUTATIONS, len(y))), axis=1)
    return float((1 + np.sum(np.abs(spearman(x, orderings)) >= observed - 1e-12)) / (1 + PERMUTATIONS))


def slopes(log_params: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Least-squares slopes of gains (last axis; leading batch axes allowed) on log_params."""
    centred = log_params - log_params.mean()
    return (gains * centred).sum(axis=-1) / (centred**2).sum()


def trend_table(summary: pd.DataFrame, rule: SelectionRule) -> dict[str, Any]:
    """The trend statistics of a `summarize` output, one entry per group, as written to trend.json."""
    groups = []
    rng = np.random.default_rng(SEED)
    unit = rule.measure.gain_unit or rule.measure.kind
    if summary.empty or "gain_seeds" not in summary:
        return {"groups": [{"group": {}, **_trend(pd.DataFrame(columns=["n_params", "gain_seeds"]), rng)}],
                "method": METHOD, "unit": unit}
    usable = summary[(summary["n_seeds"] > 0) & (pd.to_numeric(summary["n_params"], errors="coerce") > 0)]
    keyed = usable.groupby(rule.group_by, dropna=False, sort=True) if rule.group_by else [((), usable)]
    for key, rows in keyed:
        key = key if isinstance(key, tuple) else (key,)
        groups.append({"group": {c: _plain(v) for c, v in zip(rule.group_by, key)}, **_trend(rows, rng)})
    if not groups:
        groups.append({"group": {}, **_trend(usable, rng)})
    return {"groups": groups, "method": METHOD, "unit": unit}


def _trend(rows: pd.DataFrame, rng: np.random.Generator) -> dict[str, Any]:
    rows = rows.sort_values("n_params")
    n_params = rows["n_params"].to_numpy(dtype=float)
    gains = [np.asarray(g, dtype=float) for g in rows["gain_seeds"]]
    n_seeds = min((len(g) for g in gains), default=0)
    entry: dict[str, Any] = {"spearman": None, "p_value": None, "slope_per_decade": None, "slope_ci95": None,
                             "n_sizes": len(rows), "n_seeds": n_seeds, "enough": False}
    if len(rows) < MIN_SIZES or n_seeds < MIN_SEEDS:
        return entry
    means = np.array([g.mean() for g in gains])
    log_params = np.log10(n_params)
    draws = np.stack([g[rng.integers(0, len(g), (BOOTSTRAP, len(g)))].mean(axis=1) for g in gains], axis=1)
    low, high = np.percentile(slopes(log_params, draws), [2.5, 97.5])
    rho = float(spearman(log_params, means))
    entry.update(spearman=None if math.isnan(rho) else rho, p_value=_none(spearman_p_value(log_params, means, rng)),
                 slope_per_decade=float(slopes(log_params, means)), slope_ci95=[float(low), float(high)],
                 enough=True)
    return entry


def _none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _plain(value: Any) -> Any:
    """JSON-ready group value (numpy scalars as Python numbers)."""
    return value.item() if hasattr(value, "item") else value
