"""Gradient accumulation: the whole-batch SAM update computed in micro-batches, against the unsplit update and a
hand-written reference for BatchNorm nets, alone and combined with m-sharpness."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.optim import SAM, frozen_bn_stats, sam_update


def mlp(dtype: torch.dtype, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3)).to(dtype)


def batch(n: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=gen, dtype=dtype), torch.randint(0, 3, (n,), generator=gen)


def optimizer(model: nn.Module) -> SAM:
    return SAM(model.parameters(), torch.optim.SGD, rho=0.2, lr=0.3, momentum=0.9, weight_decay=1e-3)


def run(batches, dtype, **kwargs) -> nn.Module:
    model = mlp(dtype)
    opt = optimizer(model)
    for x, y in batches:
        sam_update(model, F.cross_entropy, x, y, opt, **kwargs)
    return model


def assert_close(a: nn.Module, b: nn.Module, atol: float, rtol: float = 0.0) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("micro_batch", [1, 3, 7])
def test_float64_accumulated_update_equals_the_unsplit_one(micro_batch):
    batches = [batch(10, torch.float64, seed=s) for s in range(3)]
    whole = run(batches, torch.float64)
    pieces = run(batches, torch.float64, micro_batch=micro_batch)
    assert_close(whole, pieces, atol=1e-10)
    moved = sum((p - q).abs().sum() for p, q in zip(whole.parameters(), mlp(torch.float64).parameters()))
    assert moved > 0.1


def test_float32_accumulated_update_equals_the_unsplit_one():
    """Up to float32 rounding in another summation order: 3e-8 (one ulp of the largest weight, 0.44) measured on an
    AMD EPYC; 1e-5 absolute (about 300 ulps) leaves room for other CPUs' kernels. Exactness is the float64 test's."""
    batches = [batch(32, torch.float32, seed=s) for s in range(3)]
    assert_close(run(batches, torch.float32), run(batches, torch.float32, micro_batch=5), atol=1e-5)


def test_sequence_of_unequal_micro_batches_is_weighted_by_size():
    x, y = batch(11, torch.float64, seed=4)
    whole = run([(x, y)], torch.float64)
    model = mlp(torch.float64)
    loss, out = sam_update(model, F.cross_entropy, [(x[:2], y[:2]), (x[2:9], y[2:9]), (x[9:], y[9:])], None,
                           optimizer(model))
    assert_close(whole, model, atol=1e-12)
    torch.testing.assert_close(loss, F.cross_entropy(mlp(torch.float64)(x), y).detach(), rtol=0, atol=1e-12)
    assert out.shape == (11, 3)


def chunk_reference(model: nn.Module, x, y, rho: float, chunks: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Σ_k (n_k/n) ∇L_k(w + ρ ĝ_k) with the chunk's own ε, on copies of the model, by hand."""
    n = len(x)
    total = [torch.zeros_like(p) for p in model.parameters()]
    for a, b in chunks:
        probe = copy.deepcopy(model)
        F.cross_entropy(probe(x[a:b]), y[a:b]).backward()
        grads = [p.grad.clone() for p in probe.parameters()]
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        with torch.no_grad():
            for p, g in zip(probe.parameters(), grads):
                p.add_(rho * g / (norm + 1e-12))
        probe.zero_grad()
        F.cross_entropy(probe(x[a:b]), y[a:b]).backward()
        total = [t + (b - a) / n * p.grad for t, p in zip(total, probe.parameters())]
    return total


@pytest.mark.parametrize("m, micro_batch", [(4, 3), (3, 5), (6, 2), (5, 5)])
def test_m_chunks_within_an_accumulated_batch(m, micro_batch):
    """m sets the perturbations (one ε per m examples), micro_batch only the pieces each chunk is computed in."""
    x, y = batch(13, torch.float64, seed=2)
    chunks = [(a, min(a + m, 13)) for a in range(0, 13, m)]
    expected = chunk_reference(mlp(torch.float64), x, y, 0.2, chunks)
    model = mlp(torch.float64)
    sam_update(model, F.cross_entropy, x, y, optimizer(model), m=m, micro_batch=micro_batch)
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=1e-12)


def bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).to(torch.float64)


def test_batchnorm_net_accumulates_per_piece_normalized_gradients_with_one_stat_update():
    """Oracle by hand: each piece normalizes with its own statistics in both passes; clean gradients summed → one ε
    → perturbed gradients summed; running statistics move once, with the size-weighted mean of piece statistics."""
    x, y = batch(10, torch.float64, seed=7)
    pieces = [(0, 4), (4, 8), (8, 10)]
    rho, lr = 0.3, 0.1
    ref = bn_net()
    mean0, var0 = ref[1].running_mean.clone(), ref[1].running_var.clone()
    start = [p.detach().clone() for p in ref.parameters()]
    for a, b in pieces:
        ((b - a) / 10 * F.cross_entropy(ref(x[a:b]), y[a:b])).backward()
    grads = [p.grad.clone() for p in ref.parameters()]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    ref.zero_grad()
    with torch.no_grad():
        for p, g in zip(ref.parameters(), grads):
            p.add_(rho * g / (norm + 1e-12))
    with frozen_bn_stats(ref):
        for a, b in pieces:
            ((b - a) / 10 * F.cross_entropy(ref(x[a:b]), y[a:b])).backward()
    expected = [w - lr * p.grad for w, p in zip(start, ref.parameters())]
    h = x @ start[0].T + start[1]
    mean = sum((b - a) / 10 * h[a:b].mean(dim=0) for a, b in pieces)
    var = sum((b - a) / 10 * h[a:b].var(dim=0) for a, b in pieces)

    model = bn_net()
    sam_update(model, F.cross_entropy, x, y, SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr), micro_batch=4)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-12)
    torch.testing.assert_close(model[1].running_mean, 0.9 * mean0 + 0.1 * mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(model[1].running_var, 0.9 * var0 + 0.1 * var, rtol=0, atol=1e-12)
    assert model[1].num_batches_tracked.item() == 1


def test_single_example_tail_piece_merges_on_batchnorm_nets():
    x, y = batch(9, torch.float64, seed=3)
    a, b = bn_net(), bn_net()
    sam_update(a, F.cross_entropy, x, y, SAM(a.parameters(), torch.optim.SGD, lr=0.1), micro_batch=4)  # 4, 5
    sam_update(b, F.cross_entropy, [(x[:4], y[:4]), (x[4:], y[4:])], None, SAM(b.parameters(), torch.optim.SGD, lr=0.1))
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, o, x, y: sam_update(m, F.cross_entropy, x, y, o, micro_batch=0), r"micro_batch .* got 0"),
        (lambda m, o, x, y: sam_update(m, F.cross_entropy, [(x, y)], y, o), "targets must be None"),
        (lambda m, o, x, y: sam_update(m, F.cross_entropy, [(x, y)], None, o, micro_batch=2), "already split"),
        (lambda m, o, x, y: sam_update(m, F.cross_entropy, [], None, o), "non-empty sequence"),
        (lambda m, o, x, y: sam_update(m, F.cross_entropy, x, None, o), "targets is None"),
        (lambda m, o, x, y: sam_update(m, F.cross_entropy, x, y, torch.optim.SGD(m.parameters(), lr=0.1)),
         "needs a samscale SAM optimizer, got SGD"),
    ],
)
def test_bad_arguments_raise(call, match):
    model = mlp(torch.float64)
    x, y = batch(4, torch.float64)
    with pytest.raises(ValueError, match=match):
        call(model, optimizer(model), x, y)
