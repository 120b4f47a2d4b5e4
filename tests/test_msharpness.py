"""sam_update with m-sharpness against per-chunk SAM gradients computed by hand with torch.func."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.optim import SAM, sam_update

DT = torch.float64


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(DT)


def batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=gen, dtype=DT), torch.randint(0, 3, (n,), generator=gen)


def mean_loss(params, model, x, y):
    return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)


def chunk_sam_gradient(model, x, y, rho: float, chunk: int) -> dict[str, torch.Tensor]:
    """Σ_k (n_k/n) ∇L_k(w + ρ ∇L_k(w)/‖∇L_k(w)‖), each chunk with its own ε, by hand."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    grad = torch.func.grad(mean_loss)
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for start in range(0, len(x), chunk):
        xs, ys = x[start : start + chunk], y[start : start + chunk]
        g = grad(params, model, xs, ys)
        norm = torch.sqrt(sum((v**2).sum() for v in g.values()))
        g_sam = grad({k: params[k] + rho * g[k] / (norm + 1e-12) for k in params}, model, xs, ys)
        for k in total:
            total[k] += len(xs) / len(x) * g_sam[k]
    return total


@pytest.mark.parametrize("m", [1, 3])
def test_chunked_update_is_the_size_weighted_average_of_chunk_sam_gradients(m):
    model = mlp()
    x, y = batch(8)  # m=3 gives chunks of 3, 3, 2
    lr, rho = 0.5, 0.2
    expected_grad = chunk_sam_gradient(model, x, y, rho, m)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr)
    sam_update(model, F.cross_entropy, x, y, opt, m=m)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected_grad[name], rtol=0, atol=1e-12)
        torch.testing.assert_close(p.detach(), start[name] - lr * expected_grad[name], rtol=0, atol=1e-12)


def test_m_equal_to_the_batch_is_plain_sam():
    x, y = batch(8, seed=1)
    results = []
    for m in (None, 8, 100):
        model = mlp(seed=2)
        opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.3, momentum=0.9)
        for _ in range(2):
            sam_update(model, F.cross_entropy, x, y, opt, m=m)
        results.append([p.detach().clone() for p in model.parameters()])

    model = mlp(seed=2)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.3, momentum=0.9)
    for _ in range(2):
        opt.step(lambda: F.cross_entropy(model(x), y).backward())
    results.append([p.detach().clone() for p in model.parameters()])
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_rho_zero_with_chunks_is_the_mean_loss_gradient_step():
    model = mlp(seed=3)
    x, y = batch(10, seed=3)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    full_grad = torch.func.grad(mean_loss)(params, model, x, y)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.0, lr=0.1)
    sam_update(model, F.cross_entropy, x, y, opt, m=4)  # chunks of 4, 4, 2
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, full_grad[name], rtol=0, atol=1e-14)
        torch.testing.assert_close(p.detach(), params[name] - 0.1 * full_grad[name], rtol=0, atol=1e-14)


def test_returns_clean_mean_loss_and_outputs_of_every_chunk():
    model = mlp(seed=4)
    x, y = batch(7, seed=4)
    with torch.no_grad():
        clean = model(x)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    loss, outputs = sam_update(model, F.cross_entropy, x, y, opt, m=3)
    torch.testing.assert_close(outputs, clean, rtol=0, atol=1e-15)
    torch.testing.assert_close(loss, F.cross_entropy(clean, y), rtol=0, atol=1e-15)
    assert not outputs.requires_grad and not loss.requires_grad


def bn_mlp(momentum: float | None) -> nn.Module:
    """Linear → BatchNorm1d → Linear with non-trivial running statistics and batch count."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5, momentum=momentum), nn.Linear(5, 3)).to(DT)
    with torch.no_grad():
        model[1].running_mean.copy_(torch.linspace(-1.0, 1.0, 5))
        model[1].running_var.copy_(torch.linspace(0.5, 2.0, 5))
        model[1].num_batches_tracked.fill_(3)
    return model


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("n, m, chunks", [(10, 4, [(0, 4), (4, 8), (8, 10)]), (9, 4, [(0, 4), (4, 9)])])
def test_batchnorm_makes_one_update_with_the_weighted_mean_of_chunk_statistics(momentum, n, m, chunks):
    """One running-stat update per step (mean of chunk stats, as synced per-device BN); a 1-example tail merges."""
    model = bn_mlp(momentum)
    x, y = batch(n, seed=5)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    mean0, var0 = model[1].running_mean.clone(), model[1].running_var.clone()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    sam_update(model, F.cross_entropy, x, y, opt, m=m)  # 10: chunks 4, 4, 2; 9: 4, 4, 1 → 4, 5
    bn = model[1]
    assert bn.num_batches_tracked.item() == 4
    h = x @ start["0.weight"].T + start["0.bias"]  # clean passes run at the starting weights
    mean = sum((b - a) / n * h[a:b].mean(dim=0) for a, b in chunks)
    var = sum((b - a) / n * h[a:b].var(dim=0) for a, b in chunks)  # unbiased, as torch's running_var
    f = 0.1 if momentum is not None else 1 / 4  # momentum=None: cumulative average over 4 counted batches
    torch.testing.assert_close(bn.running_mean, (1 - f) * mean0 + f * mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(bn.running_var, (1 - f) * var0 + f * var, rtol=0, atol=1e-12)
    # The 1-example tail was merged: the update equals m-sharpness over the merged chunks, computed by hand.
    if n == 9:
        ref = bn_mlp(momentum)
        grads = [torch.zeros_like(p) for p in ref.parameters()]
        for a, b in chunks:
            probe = copy.deepcopy(ref)
            F.cross_entropy(probe(x[a:b]), y[a:b]).backward()
            g = [p.grad for p in probe.parameters()]
            norm = torch.sqrt(sum((t**2).sum() for t in g))
            with torch.no_grad():
                for p, t in zip(probe.parameters(), g):
                    p.add_(0.5 * t / (norm + 1e-12))
            probe.zero_grad()
            F.cross_entropy(probe(x[a:b]), y[a:b]).backward()
            grads = [acc + (b - a) / n * p.grad for acc, p in zip(grads, probe.parameters())]
        for p, g in zip(model.parameters(), grads):
            torch.testing.assert_close(p.grad, g, rtol=0, atol=1e-12)


def test_single_example_tail_merges_only_for_batchnorm_nets():
    model = bn_mlp(0.1)
    x, y = batch(5, seed=2)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    loss, out = sam_update(model, F.cross_entropy, x, y, opt, m=2)  # chunks 2, 2, 1 → the tail merges: 2, 3
    assert out.shape == (5, 3) and torch.isfinite(loss) and model[1].num_batches_tracked.item() == 4
    plain = mlp()
    opt = SAM(plain.parameters(), torch.optim.SGD, rho=0.1, lr=0.1)
    sam_update(plain, F.cross_entropy, x, y, opt, m=2)  # no BatchNorm: the 1-example tail stays its own chunk
    expected = chunk_sam_gradient(mlp(), x, y, 0.1, 2)
    for name, p in plain.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "m, match",
    [(0, "positive integer or None, got 0"), (2.5, "got 2.5"), (True, "got True")],
)
def test_bad_m_raises(m, match):
    model = mlp()
    x, y = batch(4)
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match=match):
        sam_update(model, F.cross_entropy, x, y, opt, m=m)


def test_bad_batch_and_loss_raise():
    model = mlp()
    x, y = batch(4)
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(ValueError, match="same positive number of examples, got 4 and 3"):
        sam_update(model, F.cross_entropy, x, y[:3], opt)
    per_example = lambda out, t: F.cross_entropy(out, t, reduction="none")  # noqa: E731
    with pytest.raises(ValueError, match=r"scalar mean loss, got a tensor of shape \(4,\)"):
        sam_update(model, per_example, x, y, opt)


def test_a_failing_perturbed_pass_leaves_the_weights_unperturbed():
    model = mlp(seed=6)
    x, y = batch(6, seed=6)
    start = [p.detach().clone() for p in model.parameters()]
    calls = []

    def loss_fn(out, t):
        calls.append(1)
        if len(calls) == 2:  # the first perturbed pass
            raise FloatingPointError("loss is nan")
        return F.cross_entropy(out, t)

    opt = SAM(model.parameters(), torch.optim.SGD, rho=1.0, lr=0.1)
    with pytest.raises(FloatingPointError):
        sam_update(model, loss_fn, x, y, opt, m=3)
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), start))
    sam_update(model, F.cross_entropy, x, y, opt, m=3)  # the optimizer is usable again
