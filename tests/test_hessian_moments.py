"""M_k, S_k and s_k against explicit per-example Hessians computed with torch.func.hessian."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.hessian import HessianOperator, MomentOperator, NonUniformityOperator, nonuniformity

DT = torch.float64


@pytest.fixture(scope="module")
def problem():
    """A tiny MLP, 9 examples in two batches, and its per-example Hessians (independent of the operators)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(9, 3, generator=g, dtype=DT), torch.randint(0, 2, (9,), generator=g)
    shapes = [p.shape for p in model.parameters()]
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def example_loss(flat, xi, yi):
        w1, b1, w2, b2 = (t.view(s) for t, s in zip(torch.split(flat, [s.numel() for s in shapes]), shapes))
        return F.cross_entropy((torch.tanh(xi @ w1.T + b1) @ w2.T + b2).unsqueeze(0), yi.unsqueeze(0))

    per_example = torch.stack([torch.func.hessian(example_loss)(w, x[i], y[i]) for i in range(9)])
    return model, [(x[:4], y[:4]), (x[4:], y[4:])], per_example


def explicit_moment(per_example, k):
    return torch.stack([torch.linalg.matrix_power(h, k) for h in per_example]).mean(0)


def explicit_nonuniformity(per_example, k):
    return explicit_moment(per_example, k) - torch.linalg.matrix_power(per_example.mean(0), k)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_moment_matvec_matches_per_example_hessians(problem, k):
    model, batches, per_example = problem
    op = MomentOperator(model, F.cross_entropy, batches, k, chunk_size=3)
    torch.testing.assert_close(op.to_dense(), explicit_moment(per_example, k), rtol=1e-9, atol=1e-12)


def test_chunk_size_does_not_change_the_result(problem):
    model, batches, _ = problem
    v = torch.randn(26, dtype=DT, generator=torch.Generator().manual_seed(2))
    small = MomentOperator(model, F.cross_entropy, batches, 2, chunk_size=1).matvec(v)
    large = MomentOperator(model, F.cross_entropy, batches, 2, chunk_size=64).matvec(v)
    torch.testing.assert_close(small, large, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_nonuniformity_matvec_matches_explicit_s_k(problem, k):
    model, batches, per_example = problem
    op = NonUniformityOperator(model, F.cross_entropy, batches, k)
    torch.testing.assert_close(op.to_dense(), explicit_nonuniformity(per_example, k), rtol=1e-9, atol=1e-12)


def test_s_2_is_the_per_example_hessian_variance(problem):
    """S_2 = (1/n) Σ (H_i − H)², a second route to the same matrix."""
    model, batches, per_example = problem
    centred = per_example - per_example.mean(0)
    variance = (centred @ centred).mean(0)
    op = NonUniformityOperator(model, F.cross_entropy, batches, 2)
    torch.testing.assert_close(op.to_dense(), variance, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_s_k_matches_eigvalsh_of_explicit_s_k(problem, k):
    model, batches, per_example = problem
    top = float(torch.linalg.eigvalsh(explicit_nonuniformity(per_example, k))[-1])
    assert top > 0
    s_k = nonuniformity(model, F.cross_entropy, batches, k, tol=1e-10, generator=torch.Generator().manual_seed(3))
    assert s_k == pytest.approx(math.pow(top, 1 / k), rel=1e-8)


def test_identical_examples_have_zero_nonuniformity():
    """With every example the same, H_i = H and S_k = 0: s_k vanishes up to rounding (λ_max(S_k) ~ 1e-15)."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).to(DT)
    x = torch.randn(1, 2, dtype=DT).repeat(5, 1)
    y = torch.ones(5, 1, dtype=DT)
    op = NonUniformityOperator(model, F.mse_loss, (x, y), 3)
    assert op.to_dense().abs().max() < 1e-12
    assert nonuniformity(model, F.mse_loss, (x, y), 3, generator=torch.Generator().manual_seed(5)) ** 3 < 1e-12


def test_batchnorm_in_train_mode_is_refused():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).to(DT)
    x, y = torch.randn(4, 2, dtype=DT), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="bn_mode='eval', got 'train'"):
        MomentOperator(model, F.cross_entropy, (x, y), 2, bn_mode="train")
    with pytest.raises(ValueError, match="moment order k must be a positive integer, got 0"):
        MomentOperator(model, F.cross_entropy, (x, y), 0)


def test_batchnorm_in_eval_mode_uses_running_statistics():
    """In eval mode BN is a fixed affine map per example: M_1 equals the mean-loss Hessian."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Tanh(), nn.Linear(3, 2)).to(DT)
    model[1].running_mean.fill_(0.3)
    x, y = torch.randn(6, 2, dtype=DT), torch.tensor([0, 1, 0, 1, 1, 0])
    first = MomentOperator(model, F.cross_entropy, (x, y), 1).to_dense()
    hessian = HessianOperator(model, F.cross_entropy, (x, y)).to_dense()
    torch.testing.assert_close(first, hessian, rtol=1e-10, atol=1e-12)
