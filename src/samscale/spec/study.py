"""Study: a base RunSpec × grid axes × arms (e.g. SGD vs SAM), expanded into RunSpecs with stable run_ids.

A study YAML looks like:

    name: mnist-mlp
    base: {data: {name: mnist}, model: {family: mlp}, train: {epochs: 100}}
    grid: {model.size: [0.25, 1, 10], train.seed: [0, 1, 2]}
    arms:
      - {name: sgd, set: {optim.name: sgd}}
      - {name: sam, set: {optim.name: sam}, grid: {optim.rho: [0.01, 0.05, 0.2]}}
    selection: {baseline: {optim.name: sgd}, treatment: {optim.name: sam}, tune: [optim.rho]}

Recipes add `budgets:` (smoke, cpu, paper), each of which may `set` base fields, replace `grid` axes or `arms`, and
replace fields of the `selection` rule (e.g. a budget on another dataset scored by another metric).
"""
from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator

from samscale.errors import ConfigError, format_validation_error
from samscale.names import safe_name
from samscale.spec.metric import Metric
from samscale.spec.run import RunSpec, build_spec, check_field, flatten, load_yaml, set_dotted


ARMS = ("baseline", "treatment")


def _checked_grid(grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Grid axes must be fields of RunSpec (dotted) with a non-empty list of values each."""
    for axis, values in grid.items():
        check_field(axis)
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid axis {axis!r} needs a non-empty list of values, got {values!r}")
    return grid


def _checked_set(overrides: dict[str, Any]) -> dict[str, Any]:
    """The keys of a `set:` mapping must be fields of RunSpec (dotted)."""
    for key in overrides:
        check_field(key)
    return overrides


class SelectionRule(BaseModel):
    """How to compare a tuned treatment (SAM) with its baseline (SGD) per model size and seed.

    `baseline` / `treatment` map runs-frame columns to a value (or a list of accepted values). Per (group_by…,
    size_key) the setting of each arm with the best SEED-AVERAGED `select_by` score is chosen and every seed is
    evaluated at it; `tune` names the treatment hyperparameters that may differ between a size's runs and are
    reported as chosen (`optim.rho` → `rho_star`). `default` is an untuned treatment setting reported beside the
    tuned one (when omitted and ρ is tuned: ρ = 0.05, the usual SAM default). `epoch` says whether metrics come
    from the final epoch or the best-validation epoch (early stopping). `select_by` and `metric` are accuracies,
    multilabel average precisions, losses or (reinforcement learning) episode returns (`samscale.spec.metric`);
    `labels` names the arms in reports (e.g. {baseline: Adam} when the baseline arm is Adam without SAM).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    baseline: dict[str, Any] = {"optim.name": "sgd"}
    treatment: dict[str, Any] = {"optim.name": "sam"}
    size_key: str = "model.size"
    tune: list[str] = ["optim.rho"]
    select_by: Literal["val_acc", "val_loss", "val_return", "val_ap"] = "val_acc"
    metric: Literal["test_acc", "test_loss", "test_return", "test_ap"] = "test_acc"
    epoch: Literal["final", "best"] = "final"
    group_by: list[str] = []
    seed_key: str = "train.seed"
    default: dict[str, Any] = {}
    params: Literal["total", "nonzero"] = "total"  # x-axis: all parameters, or the non-zero ones of pruned runs
    labels: dict[str, str] = {}  # display names of the arms, e.g. {baseline: Adam}; default: from the filters

    @model_validator(mode="before")
    @classmethod
    def _default_rho(cls, data: Any) -> Any:
        if isinstance(data, dict) and "default" not in data and "optim.rho" in data.get("tune", ["optim.rho"]):
            return {**data, "default": {"optim.rho": 0.05}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "SelectionRule":
        for arm in ARMS:
            if not getattr(self, arm):
                raise ValueError(f"{arm} filter is empty; name at least one column, e.g. {{'optim.name': 'sgd'}}")
        axes = [*self.group_by, self.size_key, self.seed_key]
        if len(set(axes)) != len(axes):
            raise ValueError(f"group_by, size_key and seed_key must be distinct columns, got {axes}")
        if overlap := set(self.tune) & set(axes):
            raise ValueError(f"tune columns {sorted(overlap)} are also grouping axes; a column is one or the other")
        stars = [star_name(column) for column in self.tune]
        if len(set(stars)) != len(stars):
            raise ValueError(f"tune columns {self.tune} end in the same name; their chosen values would collide")
        if unknown := sorted(set(self.labels) - set(ARMS)):
            raise ValueError(f"labels names {unknown}; valid keys are {list(ARMS)}")
        if untuned := sorted(set(self.default) - set(self.tune)):
            raise ValueError(f"default names {untuned}, which are not tuned; default may only set tune columns "
                             f"({self.tune})")
        return self

    @classmethod
    def parse(cls, data: dict[str, Any]) -> "SelectionRule":
        """Validate a rule from plain data, raising ConfigError with one line per bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, prefix="selection.", model=cls)) from None

    @property
    def maximize(self) -> bool:
        """Whether a larger validation score is better (accuracy, return) rather than smaller (loss)."""
        return self.score.higher_is_better

    @property
    def score(self) -> Metric:
        """The validation score the choice is made on (`select_by`), with its direction and display."""
        return Metric(self.select_by)

    @property
    def measure(self) -> Metric:
        """The reported test metric (`metric`), with its direction and display."""
        return Metric(self.metric)

    @property
    def score_column(self) -> str:
        """Runs-frame column the choice is made on, e.g. `final_val_acc`."""
        return f"{self.epoch}_{self.select_by}"

    @property
    def metric_column(self) -> str:
        """Runs-frame column reported for the chosen runs, e.g. `final_test_acc`."""
        return f"{self.epoch}_{self.metric}"

    @property
    def stars(self) -> list[str]:
        """Names of the chosen-value columns, one per tuned hyperparameter (`optim.rho` → `rho_star`)."""
        return [star_name(column) for column in self.tune]


def budget_selection(rule: SelectionRule, fields: dict[str, Any]) -> SelectionRule:
    """`rule` with the fields a budget replaces (`fields`, possibly none), validated as a whole; a replaced `tune`
    without its own `default` gets the default derived for it (ρ = 0.05 when ρ is tuned), not the study's."""
    if not fields:
        return rule
    merged = {**rule.model_dump(), **fields}
    if "tune" in fields and "default" not in fields:
        merged.pop("default")
    try:
        return SelectionRule.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, model=SelectionRule)) from None


def star_name(column: str) -> str:
    """Name of the column holding the value chosen for a tuned hyperparameter: `optim.rho` → `rho_star`."""
    return f"{column.rsplit('.', 1)[-1]}_star"


class Arm(BaseModel):
    """One compared configuration (e.g. SGD, or SAM over a ρ grid): fixed overrides plus its own grid axes."""

    model_config = ConfigDict(extra="forbid")
    name: str
    set: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}

    _name = field_validator("name")(safe_name)  # arm names label files and folders of reports
    _set = field_validator("set")(_checked_set)
    _grid = field_validator("grid")(_checked_grid)


def _checked_arms(arms: list[Arm]) -> list[Arm]:
    """A study compares at least one arm, and arms are told apart by name."""
    if not arms:
        raise ValueError("a study needs at least one arm, e.g. [{name: default}]")
    names = [arm.name for arm in arms]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"arm names must be distinct, got {duplicates} more than once")
    return arms


class Budget(BaseModel):
    """How a recipe shrinks or grows: base overrides, replaced grid axes, optionally replaced arms, and replaced
    fields of the selection rule (`selection`: a partial SelectionRule; the study's other fields stay)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    description: str = ""
    set: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    arms: list[Arm] | None = None
    selection: dict[str, Any] = {}
    expected_minutes: float | None = None

    _set = field_validator("set")(_checked_set)
    _grid = field_validator("grid")(_checked_grid)

    @field_validator("arms")
    @classmethod
    def _some_arms(cls, arms: list[Arm] | None) -> list[Arm] | None:
        return arms if arms is None else _checked_arms(arms)

    @field_validator("selection")
    @classmethod
    def _known_selection_fields(cls, fields: dict[str, Any]) -> dict[str, Any]:
        if unknown := sorted(set(fields) - set(SelectionRule.model_fields)):
            raise ValueError(f"unknown field(s) {unknown} of a selection rule; valid: "
                             f"{', '.join(SelectionRule.model_fields)}")
        return fields


class Study(BaseModel):
    """A grid of runs plus how to compare them (selection) and what the paper reported (`paper` key)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    base: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    arms: list[Arm] = [Arm(name="default")]
    selection: SelectionRule = SelectionRule()
    paper: str | None = None
    notes: list[str] = []
    budgets: dict[str, Budget] = {}
    budget: str | None = None

    _name = field_validator("name")(safe_name)  # a study's name is its default work directory, runs/NAME
    _grid = field_validator("grid")(_checked_grid)
    _arms = field_validator("arms")(_checked_arms)

    @field_validator("base")
    @classmethod
    def _known_base_fields(cls, base: dict[str, Any]) -> dict[str, Any]:
        for key in flatten(base):
            check_field(key)
        return base

    @field_validator("selection")
    @classmethod
    def _known_selection_columns(cls, rule: SelectionRule) -> SelectionRule:
        """The columns a study's runs are grouped, filtered and tuned by are fields of its RunSpecs."""
        for column in [rule.size_key, rule.seed_key, *rule.tune, *rule.group_by, *rule.baseline, *rule.treatment]:
            check_field(column)
        return rule

    @field_validator("budgets")
    @classmethod
    def _valid_budget_selections(cls, budgets: dict[str, Budget], info: ValidationInfo) -> dict[str, Budget]:
        """Every budget's selection, merged into the study's, is a valid rule (checked now, not when first used)."""
        rule = info.data.get("selection")  # absent when the study's own rule failed (reported on its own)
        for name, budget in budgets.items() if rule is not None else ():
            try:
                cls._known_selection_columns(budget_selection(rule, budget.selection))
            except ValueError as err:
                message = str(err).removeprefix("invalid configuration:\n  ")
                got = "" if "got " in message else f" (got {budget.selection!r})"
                raise ValueError(f"{name}.selection: {message}{got}") from None
        return budgets

    def with_budget(self, budget: str) -> "Study":
        """This study shrunk or grown to a named budget (its `set`, `grid`, `arms` and `selection` applied)."""
        if budget not in self.budgets:
            valid = ", ".join(self.budgets) or "none defined"
            raise ConfigError(f"study {self.name!r} has no budget {budget!r}; valid: {valid}")
        chosen = self.budgets[budget]
        base = copy.deepcopy(self.base)
        for key, value in chosen.set.items():
            set_dotted(base, key, value)
        grid = {**self.grid, **chosen.grid}
        arms = chosen.arms if chosen.arms is not None else self.arms
        selection = budget_selection(self.selection, chosen.selection)
        return self.model_copy(update=dict(base=base, grid=grid, arms=arms, selection=selection, budget=budget))

    def expand(self) -> list[RunSpec]:
        """Every RunSpec of the study: for each arm, the product of the shared and the arm's grid axes."""
        specs: dict[str, RunSpec] = {}
        for arm in self.arms:
            axes = {**self.grid, **arm.grid}
            names = list(axes)
            for values in itertools.product(*(axes[name] for name in names)):
                overrides = {**dict(zip(names, values)), **arm.set}
                tree = copy.deepcopy(self.base)
                for key, value in overrides.items():
                    set_dotted(tree, key, value)
                spec = build_spec(tree, where=f"study {self.name!r}, arm {arm.name!r}, point {overrides}")
                specs.setdefault(spec.run_id, spec)  # identical points of two arms are one run
        return list(specs.values())

    def expected_seeds(self) -> int | None:
        """Number of seeds per grid point, if seeds are a grid axis."""
        seeds = self.grid.get(self.selection.seed_key)
        return len(seeds) if seeds else None

    def to_yaml(self) -> str:
        """The study as YAML (what a sweep saves beside its store, so reports can be rebuilt)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_study(path: str | Path, budget: str | None = None, *, check_runs: bool = True) -> Study:
    """Read and validate a study YAML, optionally at a named budget.

    With `check_runs` every run of the study is built and validated too (a bad grid value fails here, before
    anything is written); reading back a study a sweep already saved can skip that (it is the slow part of reporting
    a study of 10⁵ runs).
    """
    try:
        study = Study.model_validate(load_yaml(path))
    except ValidationError as err:
        raise ConfigError(f"{path}: {format_validation_error(err, model=Study)}") from None
    study = study.with_budget(budget) if budget else study
    if check_runs:
        study.expand()  # every run of the study must be a valid RunSpec: fail now, before anything is written
    return study


def runs_axes(specs: list[RunSpec]) -> list[str]:
    """The dotted fields whose values differ between the given specs (what a table of them should show)."""
    flats = [spec.flat() for spec in specs]
    keys = sorted({key for flat in flats for key in flat})
    return [key for key in keys if len({repr(flat.get(key)) for flat in flats}) > 1]


__all__ = ["Arm", "Budget", "Study", "load_study", "runs_axes", "flatten"]
