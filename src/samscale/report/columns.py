"""Report tables that read like a paper's: column headers in words, one fixed precision per column.

The CSV files keep the machine column names (`baseline_test_acc_mean`); the rendered Markdown and HTML tables use
these headers ("SGD test acc. (%)"). Accuracies are in percent, gains in percentage points (pp); losses and
episode returns are shown as they are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from samscale.report.figures import arm_label
from samscale.report.tables import MISSING, format_value
from samscale.spec.metric import Metric
from samscale.spec.study import ARMS, SelectionRule

ACC_DIGITS = 2
GAIN_DIGITS = 3
LOSS_DIGITS = 4
RETURN_DIGITS = 2
P_DIGITS = 3
_ANALYSIS_WORDS = {"lambda_max": "λ_max", "trace": "tr(H)"}


@dataclass(frozen=True)
class Column:
    """How one machine column is shown: its header in words and its fixed number of decimals (None: as is)."""

    label: str
    digits: int | None = None


def axis_label(column: str) -> str:
    """A dotted runs-frame column in words: 'data.label_noise' → 'label noise', 'optim.rho' → 'ρ'."""
    name = column.rsplit(".", 1)[-1]
    return "ρ" if name == "rho" else name.replace("_", " ")


def column_specs(rule: SelectionRule) -> dict[str, Column]:
    """Headers and precision of every summary, figure and sweep column a study report shows."""
    measure, score = rule.measure, rule.score
    base, treat = arm_label(rule, "baseline"), arm_label(rule, "treatment")
    unit = f"({measure.gain_unit})" if measure.gain_unit else ""
    digits = _digits(measure, gain=True)
    gain = f"{treat} − {base} {unit}".strip() if measure.gain_unit else (
        f"{treat} − {base} {measure.label()}" if measure.higher_is_better else f"{base} − {treat} {measure.label()}")
    default = ", ".join(f"{axis_label(c)} = {v:g}" for c, v in rule.default.items())
    specs = {c: Column(axis_label(c)) for c in [*rule.group_by, rule.size_key, *rule.tune]}
    specs.update({
        "n_params": Column("parameters", 0), "n_seeds": Column("seeds", 0),
        "gain_mean": Column(gain, digits), "gain_std": Column(f"std {unit}".strip(), digits),
        "gain_ci95": Column(f"95% CI ± {unit}".strip(), digits),
        "default_gain_mean": Column(f"untuned {default} {unit}".strip() if default else "untuned", digits),
        "null_gain_mean": Column(f"expected under no effect {unit}".strip(), digits),
        "null_p_value": Column("p (permutation)", P_DIGITS),
        "paper_gain": Column(f"paper {unit}".strip(), digits), "paper_low": Column("paper low", digits),
        "paper_high": Column("paper high", digits), "paper_note": Column("paper note"),
        "partial": Column("partial"), "n_diverged": Column("diverged", 0), "n_chosen": Column("seeds at it", 0),
        "chosen": Column("chosen"),
    })
    for star, column in zip(rule.stars, rule.tune):
        specs[star] = Column(f"{axis_label(column)}*")
        specs[f"{star}_edge"] = Column(f"{axis_label(column)}* at grid edge")
    specs[f"{rule.select_by}_mean"] = Column(f"{treat} {score.label(short=True)}, seed mean", _digits(score))
    specs[f"{rule.select_by}_std"] = Column("std", _digits(score))
    for arm in ARMS:
        name = arm_label(rule, arm)
        specs[f"{arm}_{rule.metric}_mean"] = Column(f"{name} {measure.label(short=True)}", _digits(measure))
        specs[f"{arm}_{rule.metric}_std"] = Column(f"{name} std", _digits(measure))
        specs[f"{arm}_train_loss_mean"] = Column(f"{name} train loss", None)
        specs[f"{arm}_train_loss_std"] = Column(f"{name} train loss std", None)
    return specs


def analysis_spec(column: str, rule: SelectionRule) -> Column | None:
    """Header of an `<arm>_analysis.<name>_<stat>` column, e.g. 'SAM λ_max'."""
    for arm in ARMS:
        prefix = f"{arm}_analysis."
        if column.startswith(prefix):
            name, _, stat = column[len(prefix):].rpartition("_")
            words = f"{arm_label(rule, arm)} {_ANALYSIS_WORDS.get(name, name)}"
            return Column(words if stat == "mean" else f"{words} std")
    return None


def readable(table: pd.DataFrame, rule: SelectionRule) -> pd.DataFrame:
    """The table as display text: list columns (per-seed values, kept in the CSVs) dropped, headers in words,
    every number of a column to the same precision."""
    specs = column_specs(rule)
    shown = {}
    for column in table.columns:
        values = table[column]
        if any(isinstance(v, (list, tuple, np.ndarray)) for v in values):
            continue
        spec = specs.get(column) or analysis_spec(column, rule) or Column(column)
        label = spec.label if spec.label not in shown else f"{spec.label} ({column})"
        shown[label] = [_cell(v, spec.digits) for v in values]
    return pd.DataFrame(shown, index=table.index, dtype=object)


def _cell(value: Any, digits: int | None) -> str:
    if digits is None or isinstance(value, (bool, np.bool_, str)) or value is None:
        return format_value(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return format_value(value)
    if math.isnan(number):
        return MISSING
    return f"{number:,.{digits}f}"


def _digits(metric: Metric, *, gain: bool = False) -> int:
    """Decimals shown for a metric's values (or gains): percentages and returns in fixed precision, losses finer."""
    if metric.percent:
        return GAIN_DIGITS if gain else ACC_DIGITS
    return LOSS_DIGITS if metric.kind == "loss" else RETURN_DIGITS
