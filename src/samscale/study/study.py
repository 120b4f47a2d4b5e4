"""Study: a base RunSpec × grid axes × arms (e.g. SGD vs SAM), expanded into RunSpecs with stable run_ids.

A study YAML looks like:

    name: mnist-mlp
    base: {data: {name: mnist}, model: {family: mlp}, train: {epochs: 100}}
    grid: {model.size: [0.25, 1, 10], train.seed: [0, 1, 2]}
    arms:
      - {name: sgd, set: {optim.name: sgd}}
      - {name: sam, set: {optim.name: sam}, grid: {optim.rho: [0.01, 0.05, 0.2]}}
    selection: {baseline: {optim.name: sgd}, treatment: {optim.name: sam}, tune: [optim.rho]}

Recipes add `budgets:` (smoke, cpu, paper), each of which may `set` base fields and replace `grid` axes or `arms`.
"""
from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from samscale.errors import ConfigError, format_validation_error
from samscale.study.selection import SelectionRule
from samscale.study.spec import RunSpec, build_spec, flatten, load_yaml, set_dotted


class Arm(BaseModel):
    """One compared configuration (e.g. SGD, or SAM over a ρ grid): fixed overrides plus its own grid axes."""

    model_config = ConfigDict(extra="forbid")
    name: str
    set: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}


class Budget(BaseModel):
    """How a recipe shrinks or grows: base overrides, replaced grid axes, optionally replaced arms."""

    model_config = ConfigDict(extra="forbid")
    description: str = ""
    set: dict[str, Any] = {}
    grid: dict[str, list[Any]] = {}
    arms: list[Arm] | None = None
    expected_minutes: float | None = None


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

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for axis, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid axis {axis!r} needs a non-empty list of values, got {values!r}")
        return grid

    def with_budget(self, budget: str) -> "Study":
        """This study shrunk or grown to a named budget (its `set`, `grid` and `arms` applied)."""
        if budget not in self.budgets:
            valid = ", ".join(self.budgets) or "none defined"
            raise ConfigError(f"study {self.name!r} has no budget {budget!r}; valid: {valid}")
        chosen = self.budgets[budget]
        base = copy.deepcopy(self.base)
        for key, value in chosen.set.items():
            set_dotted(base, key, value)
        grid = {**self.grid, **chosen.grid}
        arms = chosen.arms if chosen.arms is not None else self.arms
        return self.model_copy(update=dict(base=base, grid=grid, arms=arms, budget=budget))

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


def load_study(path: str | Path, budget: str | None = None) -> Study:
    """Read and validate a study YAML, optionally at a named budget."""
    try:
        study = Study.model_validate(load_yaml(path))
    except ValidationError as err:
        raise ConfigError(f"{path}: {format_validation_error(err)}") from None
    return study.with_budget(budget) if budget else study


def runs_axes(specs: list[RunSpec]) -> list[str]:
    """The dotted fields whose values differ between the given specs (what a table of them should show)."""
    flats = [spec.flat() for spec in specs]
    keys = sorted({key for flat in flats for key in flat})
    return [key for key in keys if len({repr(flat.get(key)) for flat in flats}) > 1]


__all__ = ["Arm", "Budget", "Study", "load_study", "runs_axes", "flatten"]
