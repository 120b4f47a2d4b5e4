"""Checks that a study's selection rule fits the runs the study will train, made before anything runs.

A rule that cannot select anything is found out here, at `sweep` or `reproduce` time, not after hours of training:
- the baseline and the treatment filters each match at least one run of the study's arms, and no run matches both
  (a baseline matching nothing would train every run and then report nothing). A plain sweep, one that writes no
  selection rule and lacks SGD or SAM runs, compares nothing and is not checked;
- every tuned field is a grid axis of a treatment arm (else there is nothing to choose between);
- every `default` value is a number (an untuned ρ such as 0.05; a string would fail the report after the sweep).
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from samscale.errors import ConfigError
from samscale.selection.select import matches
from samscale.spec.run import RunSpec
from samscale.spec.study import SelectionRule, Study


def check_study(study: Study, specs: list[RunSpec] | None = None) -> None:
    """Raise ConfigError naming the field when the study's selection rule cannot work on its runs (see module)."""
    rule = study.selection
    for column, value in rule.default.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"selection.default.{column} must be a number (an untuned value of {column}), got "
                              f"{value!r}")
    specs = study.expand() if specs is None else specs
    flats = pd.DataFrame([{**spec.flat(), "run_id": spec.run_id} for spec in specs])
    arms = [(arm, flats[_mask(flats, arm.set)]) for arm in study.arms]  # an arm's runs carry its `set` values
    masks = {name: {arm.name: set(runs.loc[_mask(runs, filters), "run_id"]) for arm, runs in arms}
             for name, filters in (("baseline", rule.baseline), ("treatment", rule.treatment))}
    if rule == SelectionRule() and not all(any(hits.values()) for hits in masks.values()):
        return  # a plain sweep: no selection rule written and not both SGD and SAM runs, nothing is compared
    for name, filters in (("baseline", rule.baseline), ("treatment", rule.treatment)):
        if not any(masks[name].values()):
            raise ConfigError(f"selection.{name} {filters} matches no run of the study's arms; the arms have "
                              f"{_values(arms, list(filters))}")
    both = set().union(*masks["baseline"].values()) & set().union(*masks["treatment"].values())
    if both:
        raise ConfigError(f"selection.baseline {rule.baseline} and selection.treatment {rule.treatment} both match "
                          f"{len(both)} run(s) of the study; make the filters disjoint")
    treatment_arms = [arm for arm in study.arms if masks["treatment"][arm.name]]
    for column in rule.tune:
        if not any(column in {**study.grid, **arm.grid} for arm in treatment_arms):
            raise ConfigError(
                f"selection.tune names {column}, but no treatment arm varies it: "
                + "; ".join(f"arm {arm.name!r} has grid axes {sorted({**study.grid, **arm.grid})}"
                            for arm in treatment_arms)
                + f". Add {column} to a treatment arm's grid or remove it from tune")


def _mask(runs: pd.DataFrame, filters: dict[str, Any]) -> pd.Series:
    mask = pd.Series(True, index=runs.index)
    for column, wanted in filters.items():
        mask &= matches(runs[column], wanted) if column in runs else False
    return mask


def _values(arms: list[tuple[Any, pd.DataFrame]], columns: list[str]) -> str:
    """What the arms' runs hold in the filter's columns, e.g. "optim.name ∈ {sam, sgd}"."""
    parts = []
    for column in columns:
        seen = sorted({str(v) for _, runs in arms if column in runs for v in runs[column]})
        parts.append(f"{column} ∈ {{{', '.join(seen)}}}")
    return "; ".join(parts)
