"""The paper's experiments as one-command recipes: `samscale reproduce NAME --budget smoke|cpu|paper`.

A study recipe is a study YAML with budgets beside this file, swept with the chosen executor and reported.
A combined recipe is several study recipes side by side; other recipes are Python functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from samscale.errors import ConfigError

BUDGETS = ("smoke", "cpu", "paper")


def recipe_path(name: str) -> Path:
    """The YAML file of a study recipe shipped with samscale."""
    return Path(str(resources.files("samscale.recipes") / f"{name}.yaml"))


def check_data(study) -> str | None:
    """None if the study's dataset can be loaded here, else the loader's explanation of what is missing."""
    from samscale.data import DatasetUnavailable, load_dataset

    data = study.base.get("data", {})
    try:
        load_dataset(data.get("name", "mnist"), val_size=0, **data.get("options", {}))
    except DatasetUnavailable as err:
        return str(err)
    return None


@dataclass
class StudyRecipe:
    """A recipe that sweeps one study YAML at a budget and reports it."""

    name: str
    summary: str

    def study(self, budget: str):
        """The recipe's study at `budget`."""
        from samscale.spec.study import load_study

        return load_study(recipe_path(self.name), budget)

    def studies(self, budget: str) -> list[tuple[str, object]]:
        """(sub-folder, study) pairs to sweep; '' means the output folder itself."""
        return [("", self.study(budget))]


@dataclass
class CombinedRecipe:
    """A recipe made of several study recipes (e.g. ρ* across tasks); members whose data are absent are skipped."""

    name: str
    summary: str
    members: tuple[str, ...]

    def studies(self, budget: str) -> list[tuple[str, object]]:
        """(sub-folder, study) pairs, one per member recipe."""
        return [(member, RECIPES[member].study(budget)) for member in self.members]


@dataclass
class FunctionRecipe:
    """A recipe implemented as a Python function `run(budget, out, on_progress) -> Path` returning its report."""

    name: str
    summary: str
    run: Callable[..., Path]


def _stability(budget: str, out: Path, on_progress: Callable[[str], None] | None = None) -> Path:
    from samscale.experiments.stability.run import run_stability

    return run_stability(budget, out, on_progress=on_progress)


RECIPES: dict[str, StudyRecipe | CombinedRecipe | FunctionRecipe] = {
    "mnist-mlp": StudyRecipe("mnist-mlp", "SAM − SGD test accuracy vs #params, MLPs on MNIST (5 widths)"),
    "cifar10-resnet18": StudyRecipe(
        "cifar10-resnet18", "SAM − SGD vs #params, ResNet-18 widths on CIFAR-10 (cpu: documented stand-in)"
    ),
    "imagenet-resnet50": StudyRecipe(
        "imagenet-resnet50", "SAM − SGD vs #params, ResNet-50 widths on ImageNet (needs your ImageNet folder)"
    ),
    "rho-star": CombinedRecipe(
        "rho-star",
        "optimal ρ per model size for the MNIST, CIFAR-10 and ImageNet ladders",
        ("mnist-mlp", "cifar10-resnet18", "imagenet-resnet50"),
    ),
    "stability": FunctionRecipe(
        "stability", "sharpness and Hessian non-uniformity of SGD/USAM/SAM minima vs linear-stability bounds", _stability
    ),
}


def get_recipe(name: str):
    """The recipe called `name`, with an error listing the valid names otherwise."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; valid: {', '.join(RECIPES)} (see `samscale reproduce --list`)")
    return RECIPES[name]
