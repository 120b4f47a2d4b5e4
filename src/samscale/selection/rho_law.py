"""ρ* as a law of model size: log10 ρ* = a + b · log10(#params), fitted per task over a study's tuned ρ grid.

Per task (one study's group, e.g. one label-noise rate, and one model ladder) and per size:

1. **Interpolation in log ρ.** The seed-mean validation score of each grid value of ρ is read from the runs frame;
   ρ̂* is the vertex of the parabola in log10 ρ through the best grid value and its two neighbours, kept inside that
   bracket (the curve's peak lies between the neighbours). A best value at either end of the grid is *censored*
   (the peak may lie beyond the grid): ρ̂* is then the end value and the size is flagged. A grid of fewer than three
   values cannot be interpolated: ρ̂* is the best grid value (flagged).
2. **The fit.** Ordinary least squares of log10 ρ̂* on log10 #params; the interval on b is Student-t with n − 2
   degrees of freedom from the residual scatter, which holds both the seed noise of the validation curves and the
   interpolation error of the grid. It is printed only when it is calibrated: at least 4 sizes, a grid of at least
   3 values and no censored size (`tests/test_rho_law.py` measures its coverage on simulated studies with a planted
   law); otherwise `b_ci` is None and `no_interval` says why.
3. **The comparisons.** b = 0 (one ρ for every size) and the μP-global prediction (ρ ∝ width^(−1/2) for a width
   ladder at fixed depth, Haas et al. 2024), written per decade of parameters as b_μP = −½ · d log10 width /
   d log10 #params along the ladder (≈ −¼ when #params ∝ width²). Depth ladders get no μP prediction and are never
   fitted together with width ladders.
4. **Leave one size out.** Each size's ρ is predicted from the other sizes by the fitted law, by the constant (the
   others' mean log10 ρ̂*) and by μP-global (slope b_μP, intercept fitted to the others); the prediction is rounded
   to the nearest grid value in log10 ρ, and scored by the validation and test accuracy lost against that size's
   best grid value (ρ* chosen on validation); a prediction that lands on a ρ where a seed diverged scores NaN and is
   counted (`diverged_picks`).

Sizes with a SAM run still unfinished are left out; a ρ with a diverged seed is never a size's best value.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from samscale.errors import ConfigError
from samscale.selection.select import COMPLETE, DIVERGED, UNFINISHED, prepare
from samscale.selection.stats import t_quantile_975
from samscale.spec.study import SelectionRule

RHO = "optim.rho"
DEPTH_FAMILIES = ("resnet",)
"""Model families whose ladder key is the depth (samscale.models.registry): their ladders are depth ladders."""
MU_P_WIDTH_EXPONENT = -0.5
"""μP-global (Haas et al. 2024): the global perturbation radius shrinks like width^(−1/2)."""
MIN_SIZES_FOR_INTERVAL = 4
PREDICTORS = ("law", "constant", "mup")


@dataclass
class SizePoint:
    """One size of a task: its ρ grid, seed-mean validation and test scores per grid value, and the estimate ρ̂*."""

    size: Any
    n_params: float
    grid: list[float]
    val: list[float]
    test: list[float]
    log_rho: float
    censored: bool
    best_index: int


@dataclass
class LawFit:
    """The fitted law of one task, its comparisons and its leave-one-size-out scores."""

    task: str
    ladder: str
    sizes: list[SizePoint]
    a: float | None = None
    b: float | None = None
    b_ci: tuple[float, float] | None = None
    no_interval: str | None = None
    p_b_zero: float | None = None
    b_mup: float | None = None
    p_b_mup: float | None = None
    residual_sd: float | None = None
    loso: dict[str, dict[str, float]] = field(default_factory=dict)
    loso_rows: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["b_ci"] = list(self.b_ci) if self.b_ci is not None else None
        return data


def interpolate_log_rho(log_grid: np.ndarray, scores: np.ndarray) -> tuple[float, bool, int]:
    """(log10 ρ̂*, censored, index of the best grid value) from seed-mean validation scores (higher is better).

    The parabola through the best point and its neighbours (unequal spacing allowed), its vertex clipped to the
    neighbours; the best grid value itself, flagged, at either end of the grid, with fewer than three values, or
    next to a value whose score is NaN (a ρ at which a seed diverged).
    """
    best = int(np.nanargmax(scores))
    n = len(log_grid)
    if n < 3 or best in (0, n - 1):
        return float(log_grid[best]), True, best
    x = log_grid[best - 1: best + 2]
    y = scores[best - 1: best + 2]
    if np.isnan(y).any():  # a neighbour diverged: its side of the peak is unknown
        return float(log_grid[best]), True, best
    curvature, slope, _ = np.polyfit(x, y, 2)
    if not curvature < 0:
        return float(log_grid[best]), False, best
    return float(np.clip(-slope / (2 * curvature), x[0], x[2])), False, best


def ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float | None]:
    """(a, b, standard error of b) of y = a + b x; the standard error is None with fewer than 3 points."""
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx == 0:
        raise ValueError("all sizes have the same parameter count: no slope can be fitted")
    b = float(((x - xm) * (y - ym)).sum() / sxx)
    a = float(ym - b * xm)
    if len(x) < 3:
        return a, b, None
    residual = y - a - b * x
    return a, b, float(math.sqrt((residual ** 2).sum() / (len(x) - 2) / sxx))


def t_test_p(estimate: float, null: float, se: float, dof: int) -> float:
    """Two-sided p-value of a Student-t test of estimate = null."""
    from scipy import stats

    if se == 0:
        return 0.0 if estimate != null else 1.0
    return float(2 * stats.t.sf(abs(estimate - null) / se, dof))


def fit_law(points: list[SizePoint], *, task: str, ladder: str, widths: list[float] | None,
            loso: bool = True) -> LawFit:
    """Fit the law to one task's sizes, compare it with b = 0 and μP-global, and (`loso`) score leave-one-size-out."""
    fit = LawFit(task=task, ladder=ladder, sizes=points)
    if len(points) < 2:
        fit.no_interval = f"{len(points)} size(s): a slope needs at least 2"
        return fit
    x = np.log10([p.n_params for p in points])
    y = np.array([p.log_rho for p in points])
    fit.a, fit.b, se = ols(x, y)
    if widths is not None and ladder == "width":
        fit.b_mup = MU_P_WIDTH_EXPONENT * ols(x, np.log10(widths))[1]
    reasons = []
    if len(points) < MIN_SIZES_FOR_INTERVAL:
        reasons.append(f"{len(points)} sizes (the interval is calibrated from {MIN_SIZES_FOR_INTERVAL})")
    if min(len(p.grid) for p in points) < 3:
        reasons.append(f"a ρ grid of {min(len(p.grid) for p in points)} values cannot be interpolated (needs 3)")
    censored = [p.size for p in points if p.censored]
    if censored and not any("grid of" in r for r in reasons):
        reasons.append(f"ρ* at the end of the grid (censored) for size(s) {censored}")
    dof = len(points) - 2
    if se is not None:
        fit.residual_sd = float(se * math.sqrt(((x - x.mean()) ** 2).sum()))
    if reasons:
        fit.no_interval = "; ".join(reasons)
    elif se is not None:
        half = t_quantile_975(dof) * se
        fit.b_ci = (fit.b - half, fit.b + half)
        fit.p_b_zero = t_test_p(fit.b, 0.0, se, dof)
        if fit.b_mup is not None:
            fit.p_b_mup = t_test_p(fit.b, fit.b_mup, se, dof)
    if loso and len(points) >= 3:
        fit.loso_rows = leave_one_size_out(points, x, y, fit.b_mup)
        frame = pd.DataFrame(fit.loso_rows)
        fit.loso = {name: {"val_lost": float(rows["val_lost"].mean()), "test_lost": float(rows["test_lost"].mean()),
                           "diverged_picks": int(rows["val_lost"].isna().sum())}
                    for name, rows in frame.groupby("predictor", sort=False)}
    return fit


def leave_one_size_out(points: list[SizePoint], x: np.ndarray, y: np.ndarray,
                       b_mup: float | None) -> list[dict[str, Any]]:
    """Each size's ρ predicted from the others, rounded to its grid, and the accuracy lost at it."""
    rows = []
    for i, point in enumerate(points):
        keep = np.arange(len(points)) != i
        a, b, _ = ols(x[keep], y[keep])
        predictions = {"law": a + b * x[i], "constant": float(y[keep].mean())}
        if b_mup is not None:
            predictions["mup"] = float((y[keep] - b_mup * x[keep]).mean() + b_mup * x[i])
        log_grid = np.log10(point.grid)
        for name, predicted in predictions.items():
            j = int(np.argmin(np.abs(log_grid - predicted)))
            rows.append({"size": point.size, "n_params": point.n_params, "predictor": name,
                         "predicted_rho": float(10 ** predicted), "grid_rho": point.grid[j],
                         "best_rho": point.grid[point.best_index],
                         "val_lost": point.val[point.best_index] - point.val[j],
                         "test_lost": point.test[point.best_index] - point.test[j]})
    return rows


def size_points(frame: pd.DataFrame, rule: SelectionRule) -> dict[tuple, list[SizePoint]]:
    """Per cell group (the rule's group_by values and the model family): one `SizePoint` per size, by #params."""
    if RHO not in rule.tune:
        raise ConfigError(f"the study tunes {list(rule.tune)}, not {RHO}: there is no ρ* to fit a law to")
    if rule.score.scale != rule.measure.scale or not rule.score.higher_is_better:
        raise ConfigError(f"the ρ law scores accuracies on validation and test; this study selects by "
                          f"{rule.select_by!r} and reports {rule.metric!r}")
    prep = prepare(frame, rule)
    arms = prep.arms[prep.arms["_arm"] == "treatment"]
    unfinished = arms[arms["status"].isin(UNFINISHED)]
    treat = arms[arms["status"].isin([COMPLETE, DIVERGED])]
    treat = treat[~treat.set_index([*rule.group_by, rule.size_key]).index.isin(
        unfinished.set_index([*rule.group_by, rule.size_key]).index)]  # sizes still training are left out
    if treat.empty:
        raise ConfigError("no size whose SAM runs have all finished in this study: nothing to fit")
    family = "model.family" if "model.family" in treat else None
    groups = [*rule.group_by, *([family] if family else [])]
    out: dict[tuple, list[SizePoint]] = {}
    for key, rows in (treat.groupby(groups, dropna=False, sort=True) if groups else [((), treat)]):
        key = key if isinstance(key, tuple) else (key,)
        points = []
        for size, by_size in rows.groupby(rule.size_key, sort=False):
            means = by_size.groupby(RHO)[["_score", "_metric"]].mean().sort_index()
            diverged = by_size[by_size["status"] == DIVERGED][RHO].unique()
            means.loc[means.index.isin(diverged)] = np.nan  # never chosen, as in selection
            means = means[means.index > 0]
            if means["_score"].isna().all():
                continue
            grid = [float(r) for r in means.index]
            log_rho, censored, best = interpolate_log_rho(np.log10(grid), means["_score"].to_numpy())
            points.append(SizePoint(size=_plain(size), n_params=float(by_size["n_params"].iloc[0]), grid=grid,
                                    val=means["_score"].tolist(), test=means["_metric"].tolist(),
                                    log_rho=log_rho, censored=censored, best_index=best))
        out[key] = sorted(points, key=lambda p: p.n_params)
    return out


def rho_law(frame: pd.DataFrame, rule: SelectionRule, study: str) -> list[LawFit]:
    """The law of every task in one study's runs frame (tasks: the rule's groups, one per model family)."""
    fits = []
    group_names = [*rule.group_by, "model.family"]
    for key, points in size_points(frame, rule).items():
        labels = dict(zip(group_names, key))
        family = labels.get("model.family")
        ladder = "depth" if family in DEPTH_FAMILIES else "width"
        widths = _widths(points) if ladder == "width" else None
        extra = ", ".join(f"{k}={v}" for k, v in labels.items() if k != "model.family")
        task = f"{study} [{family}{', ' + extra if extra else ''}]"
        fits.append(fit_law(points, task=task, ladder=ladder, widths=widths))
    return fits


def _widths(points: list[SizePoint]) -> list[float] | None:
    """The ladder's widths (the size key of a width ladder), or None when a size is not a number."""
    try:
        widths = [float(p.size) for p in points]
    except (TypeError, ValueError):
        return None
    return widths if all(w > 0 for w in widths) else None


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (for JSON)."""
    return value.item() if isinstance(value, np.generic) else value
