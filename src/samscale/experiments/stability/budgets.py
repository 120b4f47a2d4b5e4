"""The stability experiment's budgets as plain data: which problems, how long to train, how many seeds.

Every run uses the theory's setting (docs/PROTOCOL.md §6): plain SGD as the base (momentum 0, weight decay 0), a constant
learning rate η and batch size B = 1 (the batch size the s₃, s₄ bounds are derived for). SGD, USAM and SAM share η
and B on a problem; USAM and SAM each get their own ρ, because USAM's ε = ρ∇f (a fraction of the gradient) and SAM's
ε = ρ∇f/‖∇f‖ (a fixed length) make ρ mean different things. USAM's ρ is kept small: with B = 1 one example's
curvature h enters the step as ηh(1 + ρh), and on the teacher–student problem ρ = 0.01 at η = 0.02 diverged in the
first epoch for 3 of 8 seeds (ρ = 0.005: none of 8). On MNIST a larger USAM ρ mainly slows training (30 epochs
from seed 0: training loss 0.002 at ρ = 0.01, 0.012 at 0.03, 0.43 at 0.1), and under cross-entropy curvature follows
the loss, so ρ = 0.01 keeps the optimizers comparable there.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from samscale.errors import ConfigError
from samscale.spec.run import RunSpec, build_spec

OPTIMIZERS = ("sgd", "usam", "sam")


@dataclass(frozen=True)
class Problem:
    """One interpolating problem: the data and model of its runs, and the η, B, ρ and length they all share.

    `title` heads the report's section, `label` (short) the figures; `data` and `model` are RunSpec sections; `rho`
    maps each SAM variant to its radius; `top_k` eigenvalues and at most `max_matvecs` Hessian products per Lanczos
    run are spent on each minimum.
    """

    name: str
    title: str
    label: str
    data: Mapping[str, Any]
    model: Mapping[str, Any]
    lr: float
    batch_size: int
    epochs: int
    rho: Mapping[str, float]
    top_k: int = 10
    max_matvecs: int = 100

    def radius(self, optimizer: str) -> float:
        """ρ of `optimizer` on this problem (0 for SGD)."""
        if optimizer == "sgd":
            return 0.0
        if optimizer not in self.rho:
            raise ConfigError(f"problem {self.name!r} has no ρ for {optimizer!r}; it has: {', '.join(self.rho)}")
        return self.rho[optimizer]

    def run_spec(self, optimizer: str, seed: int, threads: int | None = 1) -> RunSpec:
        """The RunSpec of `optimizer` at `seed` on this problem: constant lr, no momentum, no weight decay, CPU."""
        return build_spec({
            "name": f"stability {self.name} {optimizer} seed={seed}",
            "data": dict(self.data),
            "model": dict(self.model),
            "optim": {"name": optimizer, "base": "sgd", "lr": self.lr, "momentum": 0.0, "weight_decay": 0.0,
                      "rho": self.radius(optimizer)},
            "schedule": {"kind": "constant"},
            "train": {"epochs": self.epochs, "batch_size": self.batch_size, "seed": seed},
            "runtime": {"device": "cpu", "threads": threads, "train_eval_size": 1_000_000},
        }, where=f"stability problem {self.name!r}")


@dataclass(frozen=True)
class StabilityBudget:
    """Problems × optimizers × seeds, the torch threads each run uses, and a one-line description."""

    description: str
    problems: tuple[Problem, ...]
    seeds: tuple[int, ...]
    optimizers: tuple[str, ...] = OPTIMIZERS
    threads: int | None = 1
    notes: tuple[str, ...] = field(default=())

    @property
    def n_runs(self) -> int:
        """Number of training runs at this budget."""
        return len(self.problems) * len(self.optimizers) * len(self.seeds)


def _mnist(n: int, epochs: int, *, hidden: tuple[int, int] = (300, 100), size: float = 0.25,
           max_matvecs: int = 60, top_k: int = 10) -> Problem:
    widths = tuple(round(size * h) for h in hidden)
    return Problem(
        name="mnist-subset",
        title=f"MNIST, first {n} training digits, MLP 784-{widths[0]}-{widths[1]}-10 (cross-entropy)",
        label=f"MNIST n={n}, MLP 784-{widths[0]}-{widths[1]}-10",
        data={"name": "mnist", "train_subset": n, "val_size": 100, "augment": False},
        model={"family": "mlp", "size": size, "options": {"base_hidden": list(hidden)}},
        lr=0.02, batch_size=1, epochs=epochs, rho={"usam": 0.01, "sam": 0.05},
        top_k=top_k, max_matvecs=max_matvecs,
    )


def _teacher_student(n: int, width: int, epochs: int, *, d: int = 10, teacher_width: int = 4,
                     max_matvecs: int = 100, top_k: int = 10) -> Problem:
    val = max(16, n // 4)
    return Problem(
        name="teacher-student",
        title=f"teacher–student regression, n = {n}, x ∈ R^{d}, two-layer ReLU student of width {width} (MSE)",
        label=f"teacher–student n={n}, width {width}",
        data={"name": "teacher-student", "val_size": val, "augment": False,
              "options": {"d": d, "teacher_width": teacher_width, "n_train": n + val, "n_test": 1000, "seed": 0}},
        model={"family": "two_layer", "size": width},
        lr=0.02, batch_size=1, epochs=epochs, rho={"usam": 0.005, "sam": 0.02},
        top_k=top_k, max_matvecs=max_matvecs,
    )


BUDGETS: dict[str, StabilityBudget] = {
    "smoke": StabilityBudget(
        description="seconds: 32 MNIST digits and a 43-parameter student, a few epochs, 1 seed (no interpolation)",
        problems=(
            _mnist(32, 2, hidden=(32, 16), max_matvecs=10, top_k=3),
            _teacher_student(32, 6, 5, d=5, teacher_width=2, max_matvecs=43, top_k=3),
        ),
        seeds=(0,),
        notes=("Smoke budget: too short to reach interpolation, so the bounds (stated for minima) are shown only "
               "to exercise the pipeline; its numbers say nothing about the paper's claim.",),
    ),
    "cpu": StabilityBudget(
        description="about 6 minutes on 2 busy CPU cores: 256 MNIST digits (MLP k = 0.25) and n = 100 "
                    "teacher–student, 2 seeds",
        problems=(_mnist(256, 30), _teacher_student(100, 50, 100)),
        seeds=(0, 1),
    ),
    "paper": StabilityBudget(
        description="hours on CPU (not timed here): 1024 MNIST digits, n = 500 teacher–student, longer training, "
                    "5 seeds",
        problems=(_mnist(1024, 100, max_matvecs=100), _teacher_student(500, 200, 300)),
        seeds=(0, 1, 2, 3, 4),
    ),
}


def get_budget(name: str) -> StabilityBudget:
    """The budget called `name`; an unknown name raises ConfigError listing the valid ones."""
    if name not in BUDGETS:
        raise ConfigError(f"unknown budget {name!r} for the stability experiment; valid: {', '.join(BUDGETS)}")
    return BUDGETS[name]
