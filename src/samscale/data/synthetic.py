"""Synthetic regression problems with known targets: teacher-student, linear least squares, a 1-D sine.

Each is drawn from one torch generator seeded by the `seed` option, in a fixed order (target first, then train,
then test), so changing a size leaves the target unchanged. Train targets carry the optional Gaussian `noise`
(standard deviation); test targets are noise-free, so test loss measures the distance to the true function.
Computed in float64, stored as float32; targets have shape (N, 1).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from samscale.data.dataset import SourceDataset
from samscale.data.options import non_negative_float, non_negative_int, positive_int
from samscale.data.split import Split


class RegressionProblem(NamedTuple):
    """Train/test inputs and targets of a synthetic regression task, with the parameters of its true function."""

    x: Tensor
    y: Tensor
    x_test: Tensor
    y_test: Tensor
    target: dict[str, Tensor]


def two_layer_teacher(d: int, width: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Teacher f(x) = a . relu(W x) with W_ij ~ N(0, 1/d), a_j ~ N(0, 2/width), so E[f(x)^2] ~ 1 for x ~ N(0, I)."""
    weight = torch.randn(width, d, generator=generator, dtype=torch.float64) / math.sqrt(d)
    head = torch.randn(width, generator=generator, dtype=torch.float64) * math.sqrt(2.0 / width)
    return {"weight": weight, "head": head}


def apply_teacher(teacher: dict[str, Tensor], x: Tensor) -> Tensor:
    """The teacher's outputs (N, 1) for inputs (N, d)."""
    return (torch.relu(x @ teacher["weight"].T) @ teacher["head"]).unsqueeze(1)


def teacher_student_problem(
    d: int, teacher_width: int, n_train: int, n_test: int, noise: float, generator: torch.Generator
) -> RegressionProblem:
    """Inputs x ~ N(0, I_d), targets from a random two-layer ReLU teacher of width `teacher_width`."""
    teacher = two_layer_teacher(d, teacher_width, generator)
    x = torch.randn(n_train, d, generator=generator, dtype=torch.float64)
    y = apply_teacher(teacher, x) + noise * torch.randn(n_train, 1, generator=generator, dtype=torch.float64)
    x_test = torch.randn(n_test, d, generator=generator, dtype=torch.float64)
    return RegressionProblem(x, y, x_test, apply_teacher(teacher, x_test), teacher)


def least_squares_problem(n: int, d: int, n_test: int, noise: float, generator: torch.Generator) -> RegressionProblem:
    """y = X w* (+ noise) with rows of X ~ N(0, I_d) and w* ~ N(0, I_d / d); over-parameterized when n < d."""
    w_star = torch.randn(d, 1, generator=generator, dtype=torch.float64) / math.sqrt(d)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = x @ w_star + noise * torch.randn(n, 1, generator=generator, dtype=torch.float64)
    x_test = torch.randn(n_test, d, generator=generator, dtype=torch.float64)
    return RegressionProblem(x, y, x_test, x_test @ w_star, {"w_star": w_star})


def sine_problem(n: int, n_test: int, noise: float, frequency: float, generator: torch.Generator) -> RegressionProblem:
    """y = sin(pi * frequency * x) at n evenly spaced x in [-1, 1] (+ noise); test on an n_test-point grid."""
    x = torch.linspace(-1.0, 1.0, n, dtype=torch.float64).unsqueeze(1)
    y = torch.sin(math.pi * frequency * x) + noise * torch.randn(n, 1, generator=generator, dtype=torch.float64)
    x_test = torch.linspace(-1.0, 1.0, n_test, dtype=torch.float64).unsqueeze(1)
    y_test = torch.sin(math.pi * frequency * x_test)
    return RegressionProblem(x, y, x_test, y_test, {"frequency": torch.tensor(frequency, dtype=torch.float64)})


def regression_source(problem: RegressionProblem, source: str) -> SourceDataset:
    """A regression SourceDataset (float32 inputs and (N, 1) targets) from a generated problem."""
    train = Split(problem.x.float(), problem.y.float())
    return SourceDataset(
        train=train,
        test=Split(problem.x_test.float(), problem.y_test.float()),
        task="regression",
        num_classes=None,
        output_dim=1,
        input_shape=tuple(train.x.shape[1:]),
        source=source,
    )


def build_teacher_student(
    *, root: str | None, download: bool, augment: bool,
    d: int = 10, teacher_width: int = 4, n_train: int = 1000, n_test: int = 1000, noise: float = 0.0, seed: int = 0,
) -> SourceDataset:
    """Teacher-student regression (see `teacher_student_problem`)."""
    d, width = positive_int("d", d), positive_int("teacher_width", teacher_width)
    n_train, n_test = positive_int("n_train", n_train), positive_int("n_test", n_test)
    noise, seed = non_negative_float("noise", noise), non_negative_int("seed", seed)
    problem = teacher_student_problem(d, width, n_train, n_test, noise, torch.Generator().manual_seed(seed))
    return regression_source(problem, f"generated (seed {seed}): x ~ N(0, I_{d}), two-layer ReLU teacher of width "
                                      f"{width}, train noise std {noise}")


def build_least_squares(
    *, root: str | None, download: bool, augment: bool,
    n: int = 50, d: int = 100, n_test: int = 1000, noise: float = 0.0, seed: int = 0,
) -> SourceDataset:
    """Linear least squares y = X w* (see `least_squares_problem`)."""
    n, d, n_test = positive_int("n", n), positive_int("d", d), positive_int("n_test", n_test)
    noise, seed = non_negative_float("noise", noise), non_negative_int("seed", seed)
    problem = least_squares_problem(n, d, n_test, noise, torch.Generator().manual_seed(seed))
    return regression_source(problem, f"generated (seed {seed}): y = X w*, n={n}, d={d}, train noise std {noise}")


def build_sine_1d(
    *, root: str | None, download: bool, augment: bool,
    n: int = 12, n_test: int = 201, noise: float = 0.0, frequency: float = 1.0, seed: int = 0,
) -> SourceDataset:
    """A handful of points of sin(pi f x) on [-1, 1] (see `sine_problem`)."""
    n, n_test = positive_int("n", n), positive_int("n_test", n_test)
    noise, seed = non_negative_float("noise", noise), non_negative_int("seed", seed)
    frequency = non_negative_float("frequency", frequency)
    problem = sine_problem(n, n_test, noise, frequency, torch.Generator().manual_seed(seed))
    return regression_source(problem, f"generated (seed {seed}): sin(pi*{frequency}*x) at {n} grid points on "
                                      f"[-1, 1], train noise std {noise}")
