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
    """None if the study's dataset (or DQN environment) is here, else what is missing and how to get it.

    Decided from files, digests and installed packages only (`samscale.data.presence`): nothing is loaded.
    """
    from samscale.data import DatasetUnavailable
    from samscale.data.presence import data_presence

    if study.base.get("rl", {}).get("env"):  # a DQN study needs its environment, not a dataset
        from samscale.data.rl_env import require_env

        try:
            require_env(study.base["rl"]["env"])
        except DatasetUnavailable as err:
            return str(err)
        return None
    data = study.base.get("data", {})
    presence = data_presence(data.get("name", "mnist"), data.get("options", {}))
    return None if presence.present else presence.message()


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


def _convergence(budget: str, out: Path, on_progress: Callable[[str], None] | None = None) -> Path:
    from samscale.experiments.convergence.run import run_convergence

    return run_convergence(budget, out, on_progress=on_progress)


def _solution_space(budget: str, out: Path, on_progress: Callable[[str], None] | None = None) -> Path:
    from samscale.experiments.solution_space.run import run_solution_space

    return run_solution_space(budget, out, on_progress=on_progress)


def _linearized(budget: str, out: Path, on_progress: Callable[[str], None] | None = None) -> Path:
    from samscale.experiments.linearized.run import run_linearized

    return run_linearized(budget, out, on_progress=on_progress)


def _two_layer(budget: str, out: Path, on_progress: Callable[[str], None] | None = None) -> Path:
    from samscale.experiments.two_layer.run import run_two_layer

    return run_two_layer(budget, out, on_progress=on_progress)


def _cost(budget: str, out: Path, on_progress: Callable[[str], None] | None = None) -> Path:
    """Sweep the cost study (SGD, SAM, cheap SAM variants, also at SAM's gradient budget) and report its cost."""
    from samscale.experiments.cost.run import run_cost
    from samscale.spec.study import load_study

    study = load_study(recipe_path("cost"), budget)
    missing = check_data(study)
    if missing:
        raise ConfigError(f"cost at budget {budget!r} needs data that are not available here: {missing}")
    return run_cost(study, out, command=f"samscale reproduce cost --budget {budget} --out {out}",
                    executor_kind="serial" if budget == "smoke" else "local", on_progress=on_progress)


EARLY_STOPPING_DIR = "early-stopping"
"""Sub-folder of the regularization recipe's second report: the same runs read at their best-validation epoch."""


def _regularization(budget: str, out: Path, on_progress: Callable[[str], None] | None = None) -> Path:
    """Sweep the regularization study, then report it twice: at the final epoch (no early stopping, the paper's
    protocol) in `out/report`, and at each run's best-validation epoch (early stopping) in `out/early-stopping`."""
    from samscale.report.study_report import build_study_report
    from samscale.spec.study import load_study
    from samscale.sweep.executors import make_executor
    from samscale.sweep.sweep import sweep

    progress = on_progress or (lambda line: None)
    study = load_study(recipe_path("regularization"), budget)
    missing = check_data(study)
    if missing:
        raise ConfigError(f"regularization at budget {budget!r} needs data that are not available here: {missing}")
    executor = make_executor("serial" if budget == "smoke" else "local")
    sweep(study, out, executor, on_result=lambda outcome, done, total: progress(
        f"{done}/{total} runs: {outcome.status}: {outcome.label}"))
    command = f"samscale reproduce regularization --budget {budget} --out {out}"
    early = build_study_report(out, command=command, out=Path(out) / EARLY_STOPPING_DIR, epoch="best")
    progress(f"report with early stopping: {early}")
    return build_study_report(out, command=command, epoch="final")


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
    "convergence": FunctionRecipe(
        "convergence", "stochastic USAM on interpolating problems: fitted linear rate vs the theorem's bound, "
        "noise floor without interpolation, PL along MLP and factorization runs", _convergence
    ),
    "synthetic": StudyRecipe(
        "synthetic", "SAM − SGD test loss vs #params (1–10 × 10⁴), two-layer MLP teacher–student regression"
    ),
    "linearized": FunctionRecipe(
        "linearized", "SAM vs SGD on the linearized MLP f(w₀) + J(w₀)(w − w₀) (jvp) beside the MLP itself, MNIST subset",
        _linearized,
    ),
    "two-layer": FunctionRecipe(
        "two-layer", "GD vs SAM test error vs width, two-layer ReLU net on signal + noise patches with label flips "
        "(fitted exponent vs the 1/m claim)", _two_layer,
    ),
    "solution-space": FunctionRecipe(
        "solution-space", "1-D regression, 10 vs 100 ReLU neurons: distance between the GD and SAM functions, "
        "sharpness of each", _solution_space
    ),
    "label-noise": StudyRecipe(
        "label-noise", "SAM − SGD vs #params at 0/20/40/60 % symmetric label noise (cpu: MNIST MLPs, noisy subset)"
    ),
    "sparsity": StudyRecipe(
        "sparsity", "pruning at init (random, SNIP): gain vs sparsity, large-sparse vs small-dense, ρ* per sparsity"
    ),
    "regularization": FunctionRecipe(
        "regularization", "counter-cases: ViT from scratch, ResNet-18 without weight decay; with/without early stopping",
        _regularization,
    ),
    "cost": FunctionRecipe(
        "cost", "SAM's gain at a fraction of its cost: SGD, SAM, LookSAM, late/random/momentum SAM per gradient "
        "evaluation (label-noise MNIST on cpu)", _cost,
    ),
    "depth": StudyRecipe("depth", "SAM − SGD for CIFAR ResNets of depth 10, 18, 34 at fixed width"),
    "atari-dqn": StudyRecipe(
        "atari-dqn", "SAM − Adam evaluation return vs #params, Nature-DQN widths (stand-in: MinAtar Breakout)"
    ),
    "sst2-lstm": StudyRecipe(
        "sst2-lstm", "SAM − SGD test accuracy vs #params, LSTMs on SST-2 (cpu: generated-lexicon stand-in)"
    ),
    "graph-gcn": StudyRecipe(
        "graph-gcn", "SAM − Adam test accuracy vs #params, GCNs on molecular graphs (stand-in: solubility molecules)"
    ),
    "pos-transformer": StudyRecipe(
        "pos-transformer", "SAM − AdamW token accuracy vs #params, Transformer part-of-speech taggers "
        "(cpu: hidden-Markov stand-in)"
    ),
}


def get_recipe(name: str):
    """The recipe called `name`, with an error listing the valid names otherwise."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; valid: {', '.join(RECIPES)} (see `samscale reproduce --list`)")
    return RECIPES[name]
