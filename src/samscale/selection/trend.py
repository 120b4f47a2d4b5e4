"""Does the gain grow with model size? Rank correlation and slope of the gain against log #parameters, per group.

For each group (label-noise rate, sparsity…; one group when the rule has none), over the sizes with paired seeds:
- `spearman`: Spearman's rank correlation between the seed-mean gain and the number of parameters (ranks with
  ties averaged, so the log makes no difference);
- `p_value`: two-sided permutation p-value of that correlation: the share of orderings of the gains over the sizes
  whose |correlation| is at least the observed one; exact (all n! orderings) up to EXACT_LIMIT sizes, otherwise
  estimated from PERMUTATIONS seeded random orderings as (1 + hits) / (1 + draws). `p_value_min` is the smallest
  value it can take, 2/n! for n sizes (1/3 at 3 sizes, 1/12 at 4); `rank_test_can_reach_05` says whether that is
  below 0.05 (n ≥ 5);
- `slope_per_decade`: least-squares slope of the seed-mean gain on log10(#parameters): gain units per tenfold
  increase in parameters. It estimates the slope of the least-squares line through the TRUE mean gains of these
  sizes (whether or not they lie on a line);
- `slope_ci95`: its 95% Welch–Satterthwaite interval. The slope is a fixed linear combination Σ wᵢ ḡᵢ of the
  sizes' seed-mean gains, so its variance is Σ wᵢ² sᵢ²/nᵢ (sᵢ the sample std of size i's nᵢ seeds; sizes are
  trained independently); its degrees of freedom are (Σ aᵢ)² / Σ aᵢ²/(nᵢ − 1) with aᵢ = wᵢ² sᵢ²/nᵢ, and the
  interval is slope ± t_{0.975, df} · √(Σ aᵢ). It assumes seeds independent and their gains roughly normal at each
  size, and allows each size its own noise. tests/test_trend_calibration.py measures its coverage (93–97.5% at 3–7
  sizes × 2–5 seeds with noise that differs between sizes); the percentile bootstrap it replaces covered only
  62–74% in the same simulation at 2 seeds and 77–84% at 3. With no seed-to-seed spread at all the interval is
  undefined (null, with a note);
- `verdict` (`grows`, `shrinks`, `slope_only`, `ranks_only`, `no_trend` or `undecided`) and `note`: what the
  calibrated numbers above support, and why not more (see `verdict`).
A group with fewer than MIN_SIZES sizes or fewer than MIN_SEEDS paired seeds at some size gets null statistics.
`enough` is true only when the statistics exist AND the rank test can reach p < 0.05.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from samscale.selection.stats import t_quantile_975_real
from samscale.spec.study import SelectionRule

EXACT_LIMIT = 8
PERMUTATIONS = 10_000
SEED = 20231129
MIN_SIZES = 3
MIN_SEEDS = 2
ALPHA = 0.05
METHOD = (
    "Per group, over model sizes: Spearman rank correlation of the seed-mean gain (tuned setting) with the number "
    "of parameters, with a two-sided permutation p-value (exact over all orderings for up to "
    f"{EXACT_LIMIT} sizes, else {PERMUTATIONS} seeded random orderings; with n sizes it cannot fall below 2/n!); "
    "least-squares slope of the seed-mean gain per decade (×10) of parameters, with a 95% Welch–Satterthwaite "
    "interval (each size's seed variance, t quantile at the Satterthwaite degrees of freedom; coverage measured by "
    f"simulation at 3-7 sizes × 2-5 seeds). Needs at least {MIN_SIZES} sizes and {MIN_SEEDS} seeds per size."
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


def smallest_p_value(n_sizes: int) -> float:
    """The smallest two-sided exact Spearman permutation p-value n sizes allow: 2/n! (both perfect orderings)."""
    return min(1.0, 2 / math.factorial(n_sizes)) if n_sizes >= 2 else 1.0


def slope_interval(log_params: np.ndarray, gains: np.ndarray) -> dict[str, np.ndarray]:
    """The least-squares slope of the seed-mean gains and its 95% Welch–Satterthwaite interval, vectorized.

    `gains` is [..., sizes, seeds] with NaN where a size has fewer seeds; every size needs ≥ 2 finite seeds. Returns
    arrays over the leading axes: `slope`, `se`, `df` and `low`/`high` (NaN where no size's seeds vary).
    """
    gains = np.asarray(gains, dtype=float)
    counts = np.isfinite(gains).sum(axis=-1)
    means = np.nanmean(gains, axis=-1)
    variances = np.nansum((gains - means[..., None]) ** 2, axis=-1) / (counts - 1)
    spread = np.nanmax(gains, axis=-1) - np.nanmin(gains, axis=-1)
    variances = np.where(spread <= 1e-12 * (1 + np.abs(means)), 0.0, variances)  # equal seeds up to rounding
    centred = log_params - log_params.mean()
    weights = centred / (centred**2).sum()  # slope = Σ weights · means
    slope = slopes(log_params, means)
    parts = weights**2 * variances / counts
    variance = parts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = variance**2 / (parts**2 / (counts - 1)).sum(axis=-1)
        df = np.where(variance > 0, df, np.nan)
    half = t_quantile_975_real(df) * np.sqrt(variance)
    return {"slope": slope, "se": np.sqrt(variance), "df": df, "low": slope - half, "high": slope + half}


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
    n_sizes, n_seeds = len(rows), min((len(g) for g in gains), default=0)
    p_min = smallest_p_value(n_sizes)
    entry: dict[str, Any] = {"spearman": None, "p_value": None, "p_value_min": p_min,
                             "rank_test_can_reach_05": p_min < ALPHA, "slope_per_decade": None, "slope_se": None,
                             "slope_df": None, "slope_ci95": None, "n_sizes": n_sizes, "n_seeds": n_seeds,
                             "enough": False}
    if n_sizes < MIN_SIZES or n_seeds < MIN_SEEDS:
        return {**entry, **verdict(entry)}
    means = np.array([g.mean() for g in gains])
    log_params = np.log10(n_params)
    matrix = np.full((n_sizes, max(len(g) for g in gains)), np.nan)
    for i, g in enumerate(gains):
        matrix[i, :len(g)] = g
    interval = slope_interval(log_params, matrix)
    rho = float(spearman(log_params, means))
    entry.update(spearman=None if math.isnan(rho) else rho, p_value=_none(spearman_p_value(log_params, means, rng)),
                 slope_per_decade=float(interval["slope"]), slope_se=float(interval["se"]),
                 slope_df=_none(float(interval["df"])), enough=p_min < ALPHA)
    if math.isfinite(float(interval["low"])):
        entry["slope_ci95"] = [float(interval["low"]), float(interval["high"])]
    return {**entry, **verdict(entry)}


def verdict(entry: dict[str, Any]) -> dict[str, str]:
    """What a trend entry's calibrated numbers support, as `verdict` and a `note` on why not more.

    - `grows` / `shrinks`: the slope's 95% interval excludes 0 and the rank correlation is significant (p < 0.05)
      with the same sign;
    - `slope_only`: the interval excludes 0 but the rank test is not significant or cannot be (too few sizes);
    - `ranks_only`: the rank test is significant but the slope's interval includes 0 (or there is none);
    - `no_trend`: neither the interval nor the rank test shows one;
    - `undecided`: too few sizes or seeds for any statistic.
    """
    sizes, p_min = entry["n_sizes"], entry["p_value_min"]
    notes = []
    if entry["slope_per_decade"] is None:
        return {"verdict": "undecided",
                "note": f"needs ≥ {MIN_SIZES} sizes and ≥ {MIN_SEEDS} seeds at every size"}
    if not entry["rank_test_can_reach_05"]:
        notes.append(f"with {sizes} sizes the rank test cannot reach p < {ALPHA:g} (its smallest possible p is "
                     f"2/{sizes}! = {p_min:.3g}); ≥ 5 sizes are needed")
    if entry["slope_ci95"] is None:
        notes.append("no interval for the slope: the seeds agree exactly at every size, so their noise cannot be "
                     "estimated")
    low, high = entry["slope_ci95"] or (math.nan, math.nan)
    direction = 1 if low > 0 else -1 if high < 0 else 0
    p_value, rho = entry["p_value"], entry["spearman"]
    ranked = 0 if p_value is None or rho is None or p_value >= ALPHA else (1 if rho > 0 else -1)
    if direction and ranked == direction:
        kind = "grows" if direction > 0 else "shrinks"
    elif direction:
        kind = "slope_only"
    elif ranked:
        kind = "ranks_only"
    else:
        kind = "no_trend"
    return {"verdict": kind, "note": "; ".join(notes)}


def _none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _plain(value: Any) -> Any:
    """JSON-ready group value (numpy scalars as Python numbers)."""
    return value.item() if hasattr(value, "item") else value
