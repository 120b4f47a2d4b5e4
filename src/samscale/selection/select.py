"""Selection and aggregation of study results: tuned SAM vs its baseline, per model size, over seeds.

Everything here is a pure function of a runs frame (one row per run, as `RunStore.runs_frame` produces it).
Hyperparameters are chosen on the validation split and the chosen runs are then reported on test, so the test set
never influences a choice (the authors' code picked "best" accuracies on test; arXiv 2311.17539, appendix code).

The rule: per (group…, size) each arm's setting (the treatment's tuned values, e.g. ρ; the baseline's, if it has
several) with the best validation score AVERAGED OVER SEEDS is chosen, and every seed is then evaluated at that
setting. Choosing per seed instead (best of K values of ρ on that seed's own validation score) invents a gain when
there is none, because a run's validation and test scores share that run's noise; averaging over seeds before
choosing shrinks this bias by √(number of seeds), and `selection.null` measures what is left.

Conventions:
- Accuracies are reported in percent and gains in percentage points; losses and episode returns as they are
  (`samscale.spec.metric`).
- Gain is positive when the treatment (SAM) is better: treatment − baseline for accuracy and return, baseline −
  treatment for loss.
- Only `complete` runs are evaluated. A setting with a `diverged` run on any seed is never chosen (it is counted).
  `pending`, `running` and `failed` runs are unfinished (failed runs are retried by the executors): a setting's
  mean is over its complete seeds so far, and any unfinished run of a size marks that size's summary as partial.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from samscale.errors import ConfigError
from samscale.names import check_name
from samscale.selection.stats import grouped_stats, t_quantile_975
from samscale.spec.status import STORED, RunStatus
from samscale.spec.status import UNFINISHED as _UNFINISHED
from samscale.spec.study import ARMS, SelectionRule, star_name

COMPLETE = RunStatus.COMPLETE.value
DIVERGED = RunStatus.DIVERGED.value
UNFINISHED = tuple(status.value for status in _UNFINISHED)
STATUSES = tuple(status.value for status in STORED)

# Identity sections of a RunSpec (spec/run.py): a column from one of these that varies between the treatment runs
# of one cell changes the numbers, so it has to be tuned or kept apart on purpose.
_HYPERPARAMETER_SECTIONS = ("data.", "model.", "optim.", "schedule.", "train.", "sparsity.")
# AnalysisSpec fields share the `analysis.` prefix with analysis results but are settings, not measurements.
_ANALYSIS_SETTINGS = frozenset({"analysis.what", "analysis.n_examples", "analysis.top_k"})

__all__ = ["ARMS", "COMPLETE", "DIVERGED", "STATUSES", "UNFINISHED", "SelectionRule", "analysis_columns",
           "analysis_names", "rho_table", "select", "star_name", "summarize", "t_quantile_975"]


def analysis_columns(frame: pd.DataFrame) -> list[str]:
    """The `analysis.<name>` columns holding scalar numeric measurements (not AnalysisSpec settings)."""
    names = []
    for column in frame.columns:
        if not column.startswith("analysis.") or column in _ANALYSIS_SETTINGS:
            continue
        values = frame[column].dropna()
        if not len(values):
            continue
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            names.append(column)
        elif all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
            names.append(column)
    return names


def analysis_names(selected: pd.DataFrame) -> list[str]:
    """The analysis columns carried by a selected frame (`treatment_analysis.lambda_max` → `analysis.lambda_max`)."""
    prefix = "treatment_"
    columns = [c[len(prefix):] for c in selected.columns if c.startswith(prefix + "analysis.")]
    for column in columns:  # read from the run store, they name figure files
        check_name(column.split(".", 1)[1], "analysis name (read from the run store)")
    return columns


@dataclass(frozen=True)
class Prepared:
    """A runs frame reduced to the two arms, with each run's setting and each size's chosen settings.

    `arms` has one row per run of either arm with `_arm`, `_cfg` (the arm's setting within its size, numbered in
    ascending order of the setting's values), `_score` and `_metric` (scaled to % for accuracies). `means` has one
    row per (cell…, arm, setting): the seed-averaged score, `_eligible` and `_chosen`. `picked` has the one run per
    (cell…, seed, arm) at the chosen setting that is complete.
    """

    arms: pd.DataFrame
    means: pd.DataFrame
    picked: pd.DataFrame
    cell: list[str]
    keys: list[str]


def prepare(frame: pd.DataFrame, rule: SelectionRule) -> Prepared:
    """Validate the frame against the rule; choose each arm's setting per (group…, size) on seed-mean validation."""
    _check_runs_frame(frame, rule)
    frame = _size_counts(frame, rule)
    base_mask, treat_mask = _arm_mask(frame, rule.baseline, "baseline"), _arm_mask(frame, rule.treatment, "treatment")
    if (both := frame.loc[base_mask & treat_mask, "run_id"]).any():
        raise ConfigError(
            f"runs {list(both)[:3]} match both the baseline {rule.baseline} and the treatment {rule.treatment} "
            "filters; make the filters disjoint"
        )
    cell = [*rule.group_by, rule.size_key]
    keys = [*cell, rule.seed_key]
    arms = pd.concat([frame[base_mask].assign(_arm="baseline"), frame[treat_mask].assign(_arm="treatment")],
                     ignore_index=True)
    arms["_score"] = pd.to_numeric(arms[rule.score_column], errors="coerce").astype(float) * rule.score.scale
    arms["_metric"] = pd.to_numeric(arms[rule.metric_column], errors="coerce").astype(float) * rule.measure.scale
    arms["_cfg"] = _settings(arms, rule, keys)
    means = _setting_means(arms, rule, cell)
    chosen = means.loc[means["_chosen"], [*cell, "_arm", "_cfg"]]
    done = arms[arms["status"] == COMPLETE]
    picked = done.merge(chosen, on=[*cell, "_arm", "_cfg"], how="inner")
    picked = picked.sort_values("run_id", kind="mergesort").drop_duplicates([*keys, "_arm"])
    return Prepared(arms, means, picked, cell, keys)


def _size_counts(frame: pd.DataFrame, rule: SelectionRule) -> pd.DataFrame:
    """The frame with `n_params` holding the count the rule measures size by: all parameters, or the non-zero ones.

    Pruned runs record `n_nonzero`; runs without it (unfinished, or dense runs of older stores) keep their total.
    """
    if rule.params == "total" or "n_nonzero" not in frame:
        return frame
    nonzero = pd.to_numeric(frame["n_nonzero"], errors="coerce")
    return frame.assign(n_params=nonzero.fillna(pd.to_numeric(frame["n_params"], errors="coerce")))


def select(frame: pd.DataFrame, rule: SelectionRule) -> pd.DataFrame:
    """Per (group…, size, seed): both arms' runs at their chosen settings, their test metric and the gain.

    The chosen setting is the same for every seed of a size (see the module docstring). Beside it, when the rule
    has a `default` treatment setting, `default_gain` is the gain of the untuned default on that seed (NaN where the
    default is not in the grid; `default_in_grid` says which). Cells where an arm has no complete run at its chosen
    setting get NaN values but are kept, so that `summarize` can see what is missing.
    """
    prep = prepare(frame, rule)
    return selected_frame(prep, rule)


def selected_frame(prep: Prepared, rule: SelectionRule) -> pd.DataFrame:
    """`select`'s output from an already prepared frame."""
    arms, keys, cell = prep.arms, prep.keys, prep.cell
    analyses = analysis_columns(arms)
    if arms.empty:
        return pd.DataFrame(columns=_selected_columns(rule, analyses))
    out = arms[keys].drop_duplicates().reset_index(drop=True)
    numbers = pd.to_numeric(arms["n_params"], errors="coerce")
    out = out.merge(numbers.groupby([arms[k] for k in keys], dropna=False).first().rename("n_params").reset_index(),
                    on=keys, how="left")
    per_run = {"run_id": "run_id", "_metric": rule.metric, "_score": rule.select_by,
               "final_train_loss": "train_loss", **{c: c for c in analyses}}
    for arm in ARMS:
        runs = prep.picked[prep.picked["_arm"] == arm]
        runs = runs[[*keys, *per_run]].rename(columns={k: f"{arm}_{v}" for k, v in per_run.items()})
        out = out.merge(runs, on=keys, how="left")
        out[f"{arm}_train_loss"] = pd.to_numeric(out[f"{arm}_train_loss"], errors="coerce").astype(float)
    out = out.merge(_status_counts(arms, keys), on=keys, how="left")
    out["gain"] = _gain(out[f"treatment_{rule.metric}"], out[f"baseline_{rule.metric}"], rule)
    out = out.merge(_stars(prep, rule), on=cell, how="left")
    out = out.merge(_default_runs(prep, rule), on=keys, how="left")
    out["default_in_grid"] = out["default_in_grid"].astype("boolean").fillna(False).astype(bool)
    out["default_gain"] = _gain(out[f"default_{rule.metric}"], out[f"baseline_{rule.metric}"], rule)
    return _sort_by_size(out[_selected_columns(rule, analyses)], rule, extra=[rule.seed_key])


def summarize(selected: pd.DataFrame, rule: SelectionRule, expected_seeds: int | None = None,
              null: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (group…, size): gain mean, sample std and Student-t 95% CI half-width over seeds, ρ*, absolute metrics.

    Only seeds with both arms selected enter the statistics. `default_gain_*` are the same statistics for the untuned
    default setting. With `null` (from `selection.null.selection_null`), the gain expected under no effect and its
    permutation p-value are added. A size is `partial` when it has unfinished runs or fewer than `expected_seeds`
    paired seeds.
    """
    if expected_seeds is not None and (int(expected_seeds) != expected_seeds or expected_seeds < 1):
        raise ValueError(f"expected_seeds must be a positive integer or None, got {expected_seeds!r}")
    analyses = analysis_names(selected)
    missing = [c for c in _selected_columns(rule, analyses) if c not in selected.columns]
    if missing:
        raise ConfigError(f"selected frame lacks columns {missing}; pass the output of select() with the same rule")
    cell = [*rule.group_by, rule.size_key]
    columns = _summary_columns(rule, analyses, null is not None)
    if selected.empty:
        return pd.DataFrame(columns=columns)
    paired = selected[selected["gain"].notna()]
    by = [selected[c] for c in cell]
    out = selected.groupby(by, dropna=False, sort=False).agg(
        n_params=("n_params", "first"), n_complete=("baseline_n_complete", "size"),
        default_in_grid=("default_in_grid", "any"),
        **{star: (star, "first") for star in rule.stars},
    ).drop(columns="n_complete")
    counts = {s: sum(selected[f"{arm}_n_{s}"] for arm in ARMS) for s in ("complete", "diverged", "unfinished")}
    out = out.join(pd.DataFrame(counts).groupby(by, dropna=False, sort=False).sum().add_prefix("n_"))
    gain = grouped_stats(selected["gain"], by, "gain")
    out = out.join(gain.drop(columns="gain_n")).assign(n_seeds=gain["gain_n"])
    out = out.join(grouped_stats(selected["default_gain"], by, "default_gain").drop(columns="default_gain_n"))
    pby = [paired[c] for c in cell]
    lists = paired.groupby(pby, dropna=False, sort=False).agg(seeds=(rule.seed_key, list), gain_seeds=("gain", list))
    out = out.join(lists)
    for name in ("seeds", "gain_seeds"):
        out[name] = [v if isinstance(v, list) else [] for v in out[name]]
    out["gain_seeds"] = [[float(g) for g in v] for v in out["gain_seeds"]]
    for arm in ARMS:
        for name in [rule.metric, "train_loss", *analyses]:
            values = pd.to_numeric(paired[f"{arm}_{name}"], errors="coerce").astype(float)
            stats = grouped_stats(values, pby, f"{arm}_{name}")
            out = out.join(stats[[f"{arm}_{name}_mean", f"{arm}_{name}_std"]])
    out = out.reset_index()
    if null is not None:
        out = out.merge(null, on=cell, how="left")
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    for status in ("complete", "diverged", "unfinished"):
        out[f"n_{status}"] = out[f"n_{status}"].astype(int)
    out["partial"] = (out["n_unfinished"] > 0) | (False if expected_seeds is None else out["n_seeds"] < expected_seeds)
    return _sort_by_size(out[columns], rule)


def rho_table(frame: pd.DataFrame, rule: SelectionRule, prep: Prepared | None = None) -> pd.DataFrame:
    """Validation score of every tuned treatment setting per (group…, size), averaged over seeds, to see ρ*.

    `chosen` marks the setting the rule picked and `n_chosen` counts the seeds evaluated at it; diverged runs are
    counted, never averaged.
    """
    prep = prep or prepare(frame, rule)
    treat = prep.arms[prep.arms["_arm"] == "treatment"]
    keys = [*prep.cell, *rule.tune]
    columns = [*keys, "n_params", f"{rule.select_by}_mean", f"{rule.select_by}_std", "n_seeds", "n_diverged",
               "n_chosen", "chosen"]
    if treat.empty:
        return pd.DataFrame(columns=columns)
    by = [*prep.cell, "_cfg"]
    done = treat[treat["status"] == COMPLETE]
    table = treat.groupby(by, dropna=False, sort=False).agg(
        **{c: (c, "first") for c in rule.tune},
        n_params=("n_params", "first"),
        n_diverged=("status", lambda s: int((s == DIVERGED).sum())),
    )
    stats = grouped_stats(done["_score"], [done[c] for c in by], rule.select_by)
    table = table.join(stats[[f"{rule.select_by}_mean", f"{rule.select_by}_std"]])
    table = table.join(done.groupby(by, dropna=False, sort=False)[rule.seed_key].nunique().rename("n_seeds"))
    picked = prep.picked[prep.picked["_arm"] == "treatment"]
    table = table.join(picked.groupby(by, dropna=False, sort=False).size().rename("n_chosen"))
    means = prep.means[prep.means["_arm"] == "treatment"].set_index(by)["_chosen"].rename("chosen")
    table = table.join(means).reset_index()
    for column in ("n_seeds", "n_chosen"):
        table[column] = table[column].fillna(0).astype(int)
    table["n_params"] = pd.to_numeric(table["n_params"], errors="coerce")
    table["chosen"] = table["chosen"].astype("boolean").fillna(False).astype(bool)
    return _sort_by_size(table[columns], rule, extra=list(rule.tune))


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


def matches(column: pd.Series, wanted: Any) -> pd.Series:
    """Which values of `column` equal `wanted` (or one of a list of wanted values); numbers compared with isclose."""
    values = wanted if isinstance(wanted, (list, tuple, set)) else [wanted]
    mask = pd.Series(False, index=column.index)
    numbers = None
    for value in values:
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            if numbers is None:
                numbers = pd.to_numeric(column, errors="coerce").astype(float).to_numpy()
            mask |= np.isclose(numbers, float(value), rtol=1e-9, atol=1e-12)
        else:
            mask |= (column == value).fillna(False).astype(bool)
    return mask


def _arm_mask(frame: pd.DataFrame, filters: dict[str, Any], arm: str) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for column, wanted in filters.items():
        if column not in frame.columns:
            raise ConfigError(f"{arm} filter column {column!r} is not in the runs frame")
        mask &= matches(frame[column], wanted)
    return mask


def _codes(column: pd.Series) -> np.ndarray:
    """Integer codes of a column's values in ascending order of the values (NaN → -1); lists compared as text."""
    try:
        return pd.factorize(column, sort=True)[0]
    except TypeError:  # unhashable (lists, dicts) or unorderable (mixed types): compare their text
        return pd.factorize(column.map(repr), sort=True)[0]


def _settings(arms: pd.DataFrame, rule: SelectionRule, keys: list[str]) -> np.ndarray:
    """Each run's setting within its arm: the treatment's tuned values; the baseline's varying hyperparameters.

    Refuses treatment runs of one (group…, size, seed) cell that differ in a hyperparameter the rule neither tunes
    nor groups by (choosing between them would silently tune it).
    """
    fixed = [c for c, v in rule.treatment.items() if not isinstance(v, (list, tuple, set))]
    candidates = [c for c in arms.columns if c.startswith(_HYPERPARAMETER_SECTIONS) and c not in {*keys, *fixed}]
    codes = pd.DataFrame({c: _codes(arms[c]) for c in dict.fromkeys([*candidates, *rule.tune])}, index=arms.index)
    setting = np.zeros(len(arms), dtype=np.int64)
    for arm in ARMS:
        rows = (arms["_arm"] == arm).to_numpy()
        if not rows.any():
            continue
        within = codes[rows].groupby([arms.loc[rows, k] for k in keys], dropna=False, sort=False).nunique()
        varying = [c for c in candidates if (within[c] > 1).any()]
        if arm == "treatment":
            if untuned := [c for c in varying if c not in rule.tune]:
                where = within.index[(within[untuned] > 1).any(axis=1)][0]
                where = dict(zip(keys, where if isinstance(where, tuple) else (where,)))
                raise ConfigError(
                    f"treatment runs at {where} differ in {untuned}, which the rule neither tunes nor groups by; "
                    f"add them to tune (tune={rule.tune}) or group_by (group_by={rule.group_by})"
                )
            varying = list(rule.tune)
        if varying:
            setting[rows] = codes.loc[rows, varying].groupby(varying, sort=True).ngroup().to_numpy()
    return setting


def _setting_means(arms: pd.DataFrame, rule: SelectionRule, cell: list[str]) -> pd.DataFrame:
    """Per (cell…, arm, setting): seed-mean score over complete runs, whether it may be chosen, and the choice."""
    by = [*cell, "_arm", "_cfg"]
    usable = arms["_score"].where(arms["status"] == COMPLETE)
    table = pd.DataFrame({
        "_mean": usable.groupby([arms[c] for c in by], dropna=False, sort=False).mean(),
        "_n": usable.groupby([arms[c] for c in by], dropna=False, sort=False).count(),
        "_diverged": (arms["status"] == DIVERGED).groupby([arms[c] for c in by], dropna=False, sort=False).sum(),
    }).reset_index()
    table["_eligible"] = (table["_n"] > 0) & (table["_diverged"] == 0)
    order = table[table["_eligible"]].sort_values(["_mean", "_cfg"], ascending=[not rule.maximize, True],
                                                  kind="mergesort")
    best = order.drop_duplicates([*cell, "_arm"]).index
    table["_chosen"] = table.index.isin(best)
    return table


def _status_counts(arms: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    flags = pd.DataFrame({"complete": arms["status"] == COMPLETE, "diverged": arms["status"] == DIVERGED,
                          "unfinished": arms["status"].isin(UNFINISHED)})
    counts = flags.groupby([*(arms[k] for k in keys), arms["_arm"]], dropna=False, sort=False).sum().astype(int)
    counts = counts.unstack("_arm", fill_value=0)
    counts = counts.reindex(columns=pd.MultiIndex.from_product([flags.columns, ARMS]), fill_value=0)
    counts.columns = [f"{arm}_n_{status}" for status, arm in counts.columns]
    return counts.reset_index()


def _stars(prep: Prepared, rule: SelectionRule) -> pd.DataFrame:
    """The chosen value of each tuned column per (group…, size)."""
    chosen = prep.means.loc[prep.means["_chosen"] & (prep.means["_arm"] == "treatment"), [*prep.cell, "_cfg"]]
    treat = prep.arms[prep.arms["_arm"] == "treatment"]
    values = treat.drop_duplicates([*prep.cell, "_cfg"])[[*prep.cell, "_cfg", *rule.tune]]
    stars = chosen.merge(values, on=[*prep.cell, "_cfg"], how="left").drop(columns="_cfg")
    return stars.rename(columns=dict(zip(rule.tune, rule.stars)))


def _default_runs(prep: Prepared, rule: SelectionRule) -> pd.DataFrame:
    """Per (group…, size, seed): the complete treatment run at the rule's default setting, if the grid has it."""
    columns = [*prep.keys, "default_run_id", f"default_{rule.metric}", "default_in_grid"]
    treat = prep.arms[prep.arms["_arm"] == "treatment"]
    if not rule.default or treat.empty:
        return pd.DataFrame(columns=columns)
    mask = pd.Series(True, index=treat.index)
    for column, value in rule.default.items():
        mask &= matches(treat[column], value)
    in_grid = treat.loc[mask, prep.cell].drop_duplicates().assign(default_in_grid=True)
    runs = treat[mask & (treat["status"] == COMPLETE)].sort_values("run_id", kind="mergesort")
    runs = runs.drop_duplicates(prep.keys)[[*prep.keys, "run_id", "_metric"]]
    runs = runs.rename(columns={"run_id": "default_run_id", "_metric": f"default_{rule.metric}"})
    cells = treat[prep.keys].drop_duplicates().merge(in_grid, on=prep.cell, how="inner")
    return cells.merge(runs, on=prep.keys, how="left")[columns]


def _gain(treatment: pd.Series, baseline: pd.Series, rule: SelectionRule) -> pd.Series:
    treatment, baseline = (pd.to_numeric(s, errors="coerce").astype(float) for s in (treatment, baseline))
    return rule.measure.gain(treatment, baseline)


def _selected_columns(rule: SelectionRule, analyses: list[str]) -> list[str]:
    per_arm = ["run_id", rule.metric, rule.select_by, "train_loss", *analyses, "n_complete", "n_diverged",
               "n_unfinished"]
    return [*rule.group_by, rule.size_key, rule.seed_key, "n_params", *rule.stars, "gain",
            *[f"{arm}_{name}" for arm in ARMS for name in per_arm],
            "default_in_grid", "default_run_id", f"default_{rule.metric}", "default_gain"]


def _sort_by_size(frame: pd.DataFrame, rule: SelectionRule, extra: list[str] = ()) -> pd.DataFrame:
    order = [c for c in [*rule.group_by, "n_params", rule.size_key, *extra] if c in frame.columns]
    if frame.empty or not order:
        return frame.reset_index(drop=True)
    return frame.sort_values(order, kind="mergesort", na_position="last").reset_index(drop=True)


# -- summary internals ---------------------------------------------------------------------------------------------
def _summary_columns(rule: SelectionRule, analyses: list[str], with_null: bool = False) -> list[str]:
    per_arm = [f"{arm}_{name}_{stat}" for arm in ARMS for name in [rule.metric, "train_loss", *analyses]
               for stat in ("mean", "std")]
    null = ["null_gain_mean", "null_p_value", "null_n_seeds", "null_n_settings"] if with_null else []
    return [*rule.group_by, rule.size_key, "n_params", "n_seeds", "seeds", "gain_mean", "gain_std", "gain_ci95",
            "gain_seeds", *rule.stars, "default_in_grid", "default_gain_mean", "default_gain_std",
            "default_gain_ci95", *null, *per_arm, "n_complete", "n_diverged", "n_unfinished", "partial"]
