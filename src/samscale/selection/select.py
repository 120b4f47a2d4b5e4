"""Selection and aggregation of study results: tuned SAM vs its baseline, per model size, over seeds.

Everything here is a pure function of a runs frame (one row per run, as `Store.runs_frame` produces it).
Hyperparameters are always chosen on the validation split and the chosen runs are then reported on test, so the
test set never influences a choice (the authors' code picked "best" accuracies on test; PAPER.md §4).

Conventions:
- Accuracies are reported in percent and gains in percentage points; losses are reported as they are.
- Gain is positive when the treatment (SAM) is better: treatment − baseline for accuracy, baseline − treatment
  for loss.
- Only `complete` runs are candidates. A `diverged` run is a finished run that lost: it is counted, but it can never
  be selected. `pending`, `running` and `failed` runs are unfinished (failed runs are retried by the executors), and
  any unfinished run of a size marks that size's summary as partial.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from samscale.errors import ConfigError
from samscale.spec.status import STORED, RunStatus
from samscale.spec.status import UNFINISHED as _UNFINISHED
from samscale.spec.study import ARMS, SelectionRule, star_name

COMPLETE = RunStatus.COMPLETE.value
DIVERGED = RunStatus.DIVERGED.value
UNFINISHED = tuple(status.value for status in _UNFINISHED)
STATUSES = tuple(status.value for status in STORED)

# Identity sections of a RunSpec (study/spec.py): a column from one of these that varies between the treatment runs
# of one cell changes the numbers, so it has to be tuned or kept apart on purpose.
_HYPERPARAMETER_SECTIONS = ("data.", "model.", "optim.", "schedule.", "train.", "sparsity.")
# AnalysisSpec fields share the `analysis.` prefix with analysis results but are settings, not measurements.
_ANALYSIS_SETTINGS = frozenset({"analysis.what", "analysis.n_examples", "analysis.top_k"})

# Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30.
_T975 = (
    12.7062047, 4.3026527, 3.1824463, 2.7764451, 2.5705818, 2.4469119, 2.3646243, 2.3060041, 2.2621572, 2.2281389,
    2.2009852, 2.1788128, 2.1603687, 2.1447867, 2.1314495, 2.1199053, 2.1098156, 2.1009220, 2.0930241, 2.0859634,
    2.0796138, 2.0738731, 2.0686576, 2.0638986, 2.0595386, 2.0555294, 2.0518305, 2.0484071, 2.0452296, 2.0422725,
)
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """Two-sided 95% Student-t quantile t_{0.975, df}: a table for df ≤ 30, Cornish–Fisher expansion beyond.

    The expansion (four terms in 1/df) is within 1e-7 of the exact quantile for every df > 30.
    """
    if int(df) != df or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    df = int(df)
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(term / df ** (power + 1) for power, term in enumerate(terms))


def analysis_columns(frame: pd.DataFrame) -> list[str]:
    """The `analysis.<name>` columns holding scalar numeric measurements (not AnalysisSpec settings)."""
    names = []
    for column in frame.columns:
        if not column.startswith("analysis.") or column in _ANALYSIS_SETTINGS:
            continue
        values = frame[column].dropna()
        if len(values) and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
            names.append(column)
    return names


def select(frame: pd.DataFrame, rule: SelectionRule) -> pd.DataFrame:
    """Per (group…, size, seed): the baseline and treatment runs chosen on validation, their test metric and the gain.

    Every complete run matching an arm's filter in a cell is a candidate; the best validation score wins, ties going
    to the smaller tuned values and then the smaller run_id. Cells where an arm has no complete run get NaN values
    but are kept, so that `summarize` can see what is missing.
    """
    _check_runs_frame(frame, rule)
    base_mask, treat_mask = _arm_mask(frame, rule.baseline, "baseline"), _arm_mask(frame, rule.treatment, "treatment")
    if (both := frame.loc[base_mask & treat_mask, "run_id"]).any():
        raise ConfigError(
            f"runs {list(both)[:3]} match both the baseline {rule.baseline} and the treatment {rule.treatment} "
            "filters; make the filters disjoint"
        )
    arms = pd.concat([frame[base_mask].assign(_arm="baseline"), frame[treat_mask].assign(_arm="treatment")])
    keys = [*rule.group_by, rule.size_key, rule.seed_key]
    _check_tuning_axes(arms[arms["_arm"] == "treatment"], rule, keys)
    analyses = analysis_columns(frame)
    rows = [_select_cell(dict(zip(keys, key)), cell, rule, analyses) for key, cell in _cells(arms, keys)]
    selected = pd.DataFrame(rows, columns=_selected_columns(rule, analyses))
    return _sort_by_size(selected, rule, extra=[rule.seed_key])


def summarize(selected: pd.DataFrame, rule: SelectionRule, expected_seeds: int | None = None) -> pd.DataFrame:
    """Per (group…, size): gain mean, sample std and 95% CI half-width over seeds, ρ* per seed, absolute metrics.

    Only seeds with both arms selected enter the statistics. A size is `partial` when it has unfinished runs or
    fewer than `expected_seeds` paired seeds.
    """
    if expected_seeds is not None and (int(expected_seeds) != expected_seeds or expected_seeds < 1):
        raise ValueError(f"expected_seeds must be a positive integer or None, got {expected_seeds!r}")
    missing = [c for c in _selected_columns(rule, analysis_names(selected)) if c not in selected.columns]
    if missing:
        raise ConfigError(f"selected frame lacks columns {missing}; pass the output of select() with the same rule")
    keys = [*rule.group_by, rule.size_key]
    rows = [_summarize_size(dict(zip(keys, key)), cell, rule, expected_seeds) for key, cell in _cells(selected, keys)]
    summary = pd.DataFrame(rows, columns=_summary_columns(rule, analysis_names(selected)))
    return _sort_by_size(summary, rule)


def rho_table(frame: pd.DataFrame, rule: SelectionRule) -> pd.DataFrame:
    """Validation score of every tuned treatment setting per (group…, size), averaged over seeds, to see ρ*.

    `n_chosen` counts the seeds whose selection picked that setting; diverged runs are counted, never averaged.
    """
    selected = select(frame, rule)
    treat = frame[_arm_mask(frame, rule.treatment, "treatment")]
    keys = [*rule.group_by, rule.size_key, *rule.tune]
    scale = _scale(rule.select_by)
    chosen_ids = set(selected["treatment_run_id"].dropna())
    rows = []
    for key, cell in _cells(treat, keys):
        done = cell[cell["status"] == COMPLETE]
        scores = done[rule.score_column].astype(float).dropna() * scale
        rows.append({
            **dict(zip(keys, key)),
            "n_params": _first_number(cell["n_params"]),
            f"{rule.select_by}_mean": scores.mean() if len(scores) else math.nan,
            f"{rule.select_by}_std": _std(scores.to_numpy()),
            "n_seeds": int(done[rule.seed_key].nunique()),
            "n_diverged": int((cell["status"] == DIVERGED).sum()),
            "n_chosen": int(cell["run_id"].isin(chosen_ids).sum()),
        })
    columns = [*keys, "n_params", f"{rule.select_by}_mean", f"{rule.select_by}_std", "n_seeds", "n_diverged",
               "n_chosen"]
    return _sort_by_size(pd.DataFrame(rows, columns=columns), rule, extra=list(rule.tune))


def analysis_names(selected: pd.DataFrame) -> list[str]:
    """The analysis columns carried by a selected frame (`treatment_analysis.lambda_max` → `analysis.lambda_max`)."""
    prefix = "treatment_"
    return [c[len(prefix):] for c in selected.columns if c.startswith(prefix + "analysis.")]


# -- selection internals -------------------------------------------------------------------------------------------
def _check_runs_frame(frame: pd.DataFrame, rule: SelectionRule) -> None:
    needed = ["run_id", "status", "n_params", "final_train_loss", rule.score_column, rule.metric_column,
              rule.size_key, rule.seed_key, *rule.group_by, *rule.tune, *rule.baseline, *rule.treatment]
    if missing := [c for c in dict.fromkeys(needed) if c not in frame.columns]:
        raise ConfigError(
            f"runs frame lacks columns {missing}; available: {', '.join(map(str, frame.columns)) or 'none'}"
        )
    if unknown := sorted(set(frame["status"].dropna()) - set(STATUSES)):
        raise ConfigError(f"unknown run status {unknown}; valid: {', '.join(STATUSES)}")
    complete = frame[frame["status"] == COMPLETE]
    if len(complete) and complete[rule.score_column].isna().all():
        raise ConfigError(
            f"{rule.score_column} is NaN for every complete run; for regression tasks use select_by='val_loss' "
            "and metric='test_loss'"
        )


def _arm_mask(frame: pd.DataFrame, filters: dict[str, Any], arm: str) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for column, wanted in filters.items():
        if column not in frame.columns:
            raise ConfigError(f"{arm} filter column {column!r} is not in the runs frame")
        values = wanted if isinstance(wanted, (list, tuple, set)) else [wanted]
        mask &= frame[column].map(lambda v, values=values: any(_same(v, w) for w in values)).astype(bool)
    return mask


def _same(value: Any, wanted: Any) -> bool:
    numbers = (int, float, np.number)
    if isinstance(value, numbers) and isinstance(wanted, numbers) and not isinstance(wanted, bool):
        return bool(np.isclose(float(value), float(wanted), rtol=1e-9, atol=1e-12))
    return value == wanted


def _check_tuning_axes(treatment: pd.DataFrame, rule: SelectionRule, keys: list[str]) -> None:
    """Refuse to choose between treatment runs that differ in a hyperparameter the rule neither tunes nor groups."""
    fixed = [c for c, v in rule.treatment.items() if not isinstance(v, (list, tuple, set))]
    known = {*keys, *rule.tune, *fixed}
    columns = [c for c in treatment.columns if c.startswith(_HYPERPARAMETER_SECTIONS) and c not in known]
    for key, cell in _cells(treatment, keys):
        if varying := [c for c in columns if cell[c].map(repr).nunique() > 1]:
            raise ConfigError(
                f"treatment runs at {dict(zip(keys, key))} differ in {varying}, which the rule neither tunes nor "
                f"groups by; add them to tune (tune={rule.tune}) or group_by (group_by={rule.group_by})"
            )


def _cells(frame: pd.DataFrame, keys: list[str]):
    if frame.empty:
        return []
    return frame.groupby(keys, dropna=False, sort=False)


def _best(candidates: pd.DataFrame, rule: SelectionRule) -> pd.Series | None:
    """The complete run with the best validation score; diverged and NaN-scored runs are never chosen."""
    usable = candidates[(candidates["status"] == COMPLETE) & candidates[rule.score_column].notna()]
    if usable.empty:
        return None
    order = [rule.score_column, *rule.tune, "run_id"]
    ascending = [not rule.maximize, *([True] * len(rule.tune)), True]
    return usable.sort_values(order, ascending=ascending, kind="mergesort").iloc[0]


def _select_cell(row: dict[str, Any], cell: pd.DataFrame, rule: SelectionRule, analyses: list[str]) -> dict:
    chosen = {arm: _best(cell[cell["_arm"] == arm], rule) for arm in ARMS}
    metric_scale, score_scale = _scale(rule.metric), _scale(rule.select_by)
    for arm, run in chosen.items():
        runs = cell[cell["_arm"] == arm]
        row[f"{arm}_run_id"] = None if run is None else run["run_id"]
        row[f"{arm}_{rule.metric}"] = _value(run, rule.metric_column) * metric_scale
        row[f"{arm}_{rule.select_by}"] = _value(run, rule.score_column) * score_scale
        row[f"{arm}_train_loss"] = _value(run, "final_train_loss")
        for column in analyses:
            row[f"{arm}_{column}"] = _value(run, column)
        row[f"{arm}_n_complete"] = int((runs["status"] == COMPLETE).sum())
        row[f"{arm}_n_diverged"] = int((runs["status"] == DIVERGED).sum())
        row[f"{arm}_n_unfinished"] = int(runs["status"].isin(UNFINISHED).sum())
    base, treat = row[f"baseline_{rule.metric}"], row[f"treatment_{rule.metric}"]
    row["gain"] = treat - base if rule.metric.endswith("acc") else base - treat
    for column, star in zip(rule.tune, rule.stars):
        row[star] = None if chosen["treatment"] is None else chosen["treatment"][column]
    picked = [run for run in (chosen["treatment"], chosen["baseline"]) if run is not None]
    row["n_params"] = _first_number(pd.Series([run["n_params"] for run in picked] + list(cell["n_params"])))
    return row


def _value(run: pd.Series | None, column: str) -> float:
    if run is None or run[column] is None:
        return math.nan
    return float(run[column])


def _scale(metric: str) -> float:
    return 100.0 if metric.endswith("acc") else 1.0


def _first_number(values: pd.Series) -> float:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return float(numbers.iloc[0]) if len(numbers) else math.nan


def _selected_columns(rule: SelectionRule, analyses: list[str]) -> list[str]:
    per_arm = ["run_id", rule.metric, rule.select_by, "train_loss", *analyses, "n_complete", "n_diverged",
               "n_unfinished"]
    return [*rule.group_by, rule.size_key, rule.seed_key, "n_params", *rule.stars, "gain",
            *[f"{arm}_{name}" for arm in ARMS for name in per_arm]]


def _sort_by_size(frame: pd.DataFrame, rule: SelectionRule, extra: list[str] = ()) -> pd.DataFrame:
    order = [c for c in [*rule.group_by, "n_params", rule.size_key, *extra] if c in frame.columns]
    if frame.empty or not order:
        return frame.reset_index(drop=True)
    return frame.sort_values(order, kind="mergesort", na_position="last").reset_index(drop=True)


# -- summary internals ---------------------------------------------------------------------------------------------
def _std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1); 0 for one value, NaN for none."""
    if len(values) == 0:
        return math.nan
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _summarize_size(row: dict[str, Any], cell: pd.DataFrame, rule: SelectionRule, expected: int | None) -> dict:
    paired = cell[cell["gain"].notna()]
    gains = paired["gain"].to_numpy(dtype=float)
    n = len(gains)
    std = _std(gains)
    row.update(
        n_params=_first_number(cell["n_params"]),
        n_seeds=n,
        seeds=paired[rule.seed_key].tolist(),
        gain_mean=float(gains.mean()) if n else math.nan,
        gain_std=std,
        gain_ci95=t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan,
        gain_seeds=[float(g) for g in gains],
    )
    for star in rule.stars:
        values = paired[star].tolist()
        numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").dropna()
        row[f"{star}_median"] = float(numeric.median()) if len(numeric) == len(values) and n else math.nan
        row[f"{star}_seeds"] = values
    for arm in ARMS:
        for name in [rule.metric, "train_loss", *analysis_names(cell)]:
            values = paired[f"{arm}_{name}"].to_numpy(dtype=float)
            row[f"{arm}_{name}_mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
            row[f"{arm}_{name}_std"] = _std(values[np.isfinite(values)])
    for status in ("complete", "diverged", "unfinished"):
        row[f"n_{status}"] = int(sum(cell[f"{arm}_n_{status}"].sum() for arm in ARMS))
    row["partial"] = bool(row["n_unfinished"] > 0 or (expected is not None and n < expected))
    return row


def _summary_columns(rule: SelectionRule, analyses: list[str]) -> list[str]:
    stars = [f"{star}_{part}" for star in rule.stars for part in ("median", "seeds")]
    per_arm = [f"{arm}_{name}_{stat}" for arm in ARMS for name in [rule.metric, "train_loss", *analyses]
               for stat in ("mean", "std")]
    return [*rule.group_by, rule.size_key, "n_params", "n_seeds", "seeds", "gain_mean", "gain_std", "gain_ci95",
            "gain_seeds", *stars, *per_arm, "n_complete", "n_diverged", "n_unfinished", "partial"]
