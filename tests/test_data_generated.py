"""Generated datasets: MNIST-1D (via the mnist1d package, cached) and the synthetic regression problems."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from samscale.data import load_dataset
from samscale.data.synthetic import least_squares_problem, teacher_student_problem
from samscale.errors import ConfigError


@pytest.fixture
def data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMSCALE_DATA", str(tmp_path))
    return tmp_path


def test_mnist1d_shapes_cache_and_determinism(data_home):
    pytest.importorskip("mnist1d")
    np.random.seed(7)
    random.seed(7)
    ds = load_dataset("mnist1d", val_size=0)
    assert np.random.rand() == np.random.RandomState(7).rand() and random.random() == random.Random(7).random()
    assert ds.train.x.shape == (4000, 40) and ds.test.x.shape == (1000, 40) and ds.input_shape == (40,)
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64 and ds.num_classes == 10
    assert torch.bincount(torch.cat([ds.train.y, ds.test.y])).tolist() == [500] * 10  # 5000 / 10 per class
    cached = list((data_home / "mnist1d").glob("mnist1d-*.npz"))
    assert len(cached) == 1 and str(cached[0]) in ds.source and "seed 42" in ds.source
    again = load_dataset("mnist1d", val_size=0)
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.y, ds.test.y)


def test_mnist1d_seed_and_size_change_the_data(data_home):
    pytest.importorskip("mnist1d")
    a = load_dataset("mnist1d", val_size=0, seed=1, num_samples=200)
    b = load_dataset("mnist1d", val_size=0, seed=2, num_samples=200)
    assert a.train.x.shape == (160, 40) and a.test.x.shape == (40, 40)
    assert not torch.equal(a.train.x, b.train.x)
    cached = list((data_home / "mnist1d").glob("*.npz"))
    assert len(cached) == 2
    for path in cached:
        path.unlink()
    regenerated = load_dataset("mnist1d", val_size=0, seed=1, num_samples=200)
    assert torch.equal(regenerated.train.x, a.train.x)  # generation itself is seeded, not just cached


def test_least_squares_targets_are_exactly_linear_in_the_inputs():
    ds = load_dataset("least-squares", val_size=0, n=40, d=6, n_test=30, seed=3)
    x, y = ds.train.x.double(), ds.train.y.double()
    assert ds.task == "regression" and ds.num_classes is None and ds.output_dim == 1 and y.shape == (40, 1)
    w = torch.linalg.lstsq(x, y).solution
    torch.testing.assert_close(x @ w, y, rtol=0, atol=1e-5)
    torch.testing.assert_close(ds.test.x.double() @ w, ds.test.y.double(), rtol=0, atol=1e-5)


def test_least_squares_noise_has_the_requested_spread():
    problem = least_squares_problem(20_000, 3, 10, 0.5, torch.Generator().manual_seed(0))
    residual = problem.y - problem.x @ problem.target["w_star"]
    assert abs(residual.std().item() - 0.5) < 0.02
    torch.testing.assert_close(problem.y_test, problem.x_test @ problem.target["w_star"])  # test is noise-free


def test_overparameterized_least_squares_can_be_interpolated():
    ds = load_dataset("least-squares", val_size=0, seed=1)  # defaults n=50 < d=100
    x, y = ds.train.x.double(), ds.train.y.double()
    assert x.shape == (50, 100)
    w = torch.linalg.pinv(x) @ y
    torch.testing.assert_close(x @ w, y, rtol=0, atol=1e-6)


def test_teacher_student_targets_are_the_teachers_outputs():
    problem = teacher_student_problem(5, 3, 50, 20, 0.0, torch.Generator().manual_seed(4))
    weight, head = problem.target["weight"], problem.target["head"]
    by_hand = torch.stack([sum(head[j] * max(0.0, float(weight[j] @ row)) for j in range(3)) for row in problem.x])
    torch.testing.assert_close(problem.y[:, 0], by_hand)
    ds = load_dataset("teacher-student", val_size=0, d=5, teacher_width=3, n_train=50, n_test=20, seed=4)
    torch.testing.assert_close(ds.train.y.double(), problem.y, rtol=0, atol=1e-6)
    assert ds.input_shape == (5,) and ds.train.y.dtype == torch.float32


def test_teacher_outputs_have_unit_second_moment_on_average():
    moments = [teacher_student_problem(8, 16, 400, 1, 0.0, torch.Generator().manual_seed(s)).y.pow(2).mean()
               for s in range(200)]
    assert abs(torch.stack(moments).mean().item() - 1.0) < 0.1


def test_teacher_is_independent_of_the_sample_sizes():
    small = teacher_student_problem(4, 3, 10, 5, 0.0, torch.Generator().manual_seed(2))
    large = teacher_student_problem(4, 3, 300, 50, 0.1, torch.Generator().manual_seed(2))
    assert all(torch.equal(small.target[key], large.target[key]) for key in ("weight", "head"))


def test_sine_points_lie_on_the_target():
    ds = load_dataset("sine-1d", val_size=0, n=15, n_test=101, frequency=2.0)
    x = ds.train.x.double()
    assert ds.input_shape == (1,) and x.shape == (15, 1)
    torch.testing.assert_close(x[:, 0], torch.linspace(-1, 1, 15, dtype=torch.float64), rtol=0, atol=1e-7)
    torch.testing.assert_close(ds.train.y.double(), torch.sin(2 * math.pi * x), rtol=0, atol=1e-6)
    noisy = load_dataset("sine-1d", val_size=0, n=15, noise=0.1, seed=1)
    residual = noisy.train.y.double() - torch.sin(math.pi * x)
    assert 0 < residual.abs().max().item() < 0.5


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("teacher-student", {"d": 0}, "d must be a positive integer, got 0"),
        ("least-squares", {"noise": -0.1}, r"noise must be a finite number >= 0, got -0.1"),
        ("sine-1d", {"n": 2.5}, "n must be a positive integer, got 2.5"),
        ("mnist1d", {"num_samples": "many"}, "num_samples must be a positive integer, got 'many'"),
        ("cifar10-standin", {"base": "svhn"}, r"base must be one of \['auto', 'fashion-mnist', 'mnist'\]"),
    ],
)
def test_bad_options_name_the_option_and_the_valid_values(name, options, message):
    with pytest.raises(ConfigError, match=message):
        load_dataset(name, val_size=0, **options)
