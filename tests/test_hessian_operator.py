"""HessianOperator against independent oracles: torch.func.hessian, finite differences, explicit BatchNorm math."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.hessian import HessianOperator
from samscale.hessian.objective import HVP_MODES

DT = torch.float64


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(DT)


def tiny_data(n: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=DT), torch.randint(0, 3, (n,), generator=g)


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def split(model: nn.Module, flat: torch.Tensor) -> list[torch.Tensor]:
    shapes = [p.shape for p in model.parameters()]
    parts = torch.split(flat, [s.numel() for s in shapes])
    return [part.view(s) for part, s in zip(parts, shapes)]


def mlp_loss(model: nn.Module, flat: torch.Tensor, x, y) -> torch.Tensor:
    """The MLP written out by hand, so the oracle shares no code with the operator."""
    w1, b1, w2, b2 = split(model, flat)
    return F.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y)


def explicit_hessian(model, x, y) -> torch.Tensor:
    return torch.func.hessian(lambda w: mlp_loss(model, w, x, y))(flat_params(model))


def test_matvec_matches_explicit_hessian_columns():
    model = tiny_mlp()
    x, y = tiny_data()
    op = HessianOperator(model, F.cross_entropy, [(x, y)])
    exact = explicit_hessian(model, x, y)
    assert op.size == exact.shape[0] == 43
    torch.testing.assert_close(op.to_dense(), exact, rtol=1e-10, atol=1e-12)
    v = torch.randn(op.size, dtype=DT, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(op @ v, exact @ v, rtol=1e-10, atol=1e-12)


def test_unequal_batches_are_weighted_by_size():
    model = tiny_mlp()
    x, y = tiny_data(n=13)
    batches = [(x[:2], y[:2]), (x[2:9], y[2:9]), (x[9:], y[9:])]
    op = HessianOperator(model, F.cross_entropy, iter(batches))  # a one-shot iterator is materialized once
    v = torch.randn(op.size, dtype=DT, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(op.matvec(v), explicit_hessian(model, x, y) @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.matvec(v), op.matvec(v))


def test_matvec_matches_central_differences_of_autograd_gradients():
    model = tiny_mlp(seed=4)
    x, y = tiny_data(seed=5)
    op = HessianOperator(model, F.cross_entropy, (x, y))
    v = torch.randn(op.size, dtype=DT, generator=torch.Generator().manual_seed(6))
    v /= v.norm()

    def autograd_gradient(flat):
        clone = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(flat, clone.parameters())
        F.cross_entropy(clone(x), y).backward()
        return torch.cat([p.grad.reshape(-1) for p in clone.parameters()])

    eps = 1e-5
    w = flat_params(model)
    difference = (autograd_gradient(w + eps * v) - autograd_gradient(w - eps * v)) / (2 * eps)
    torch.testing.assert_close(op.matvec(v), difference, rtol=1e-7, atol=1e-9)


def test_forward_over_reverse_equals_double_backward_and_reverse_over_forward():
    model = tiny_mlp(seed=7)
    x, y = tiny_data(seed=8)
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    v = torch.randn(43, dtype=DT, generator=torch.Generator().manual_seed(9))
    products = [HessianOperator(model, F.cross_entropy, batches, hvp_mode=m).matvec(v) for m in HVP_MODES]
    for product in products[1:]:
        torch.testing.assert_close(product, products[0], rtol=1e-12, atol=1e-14)


def test_cached_double_backward_reuses_the_graph_and_gives_the_same_products():
    model = tiny_mlp(seed=22)
    x, y = tiny_data(seed=23)
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    cached = HessianOperator(model, F.cross_entropy, batches, hvp_mode="double_backward", cache=True)
    torch.testing.assert_close(cached.to_dense(), explicit_hessian(model, x, y), rtol=1e-10, atol=1e-12)
    v = torch.randn(43, dtype=DT, generator=torch.Generator().manual_seed(24))
    torch.testing.assert_close(cached.matvec(v), cached.matvec(v), rtol=0, atol=0)
    with pytest.raises(ValueError, match="cache=True needs hvp_mode='double_backward' or 'auto'.*got 'fwd_rev'"):
        HessianOperator(model, F.cross_entropy, batches, hvp_mode="fwd_rev", cache=True)


def test_mean_squared_error_loss_is_supported_in_every_mode():
    """torch cannot run forward-over-reverse through F.mse_loss(reduction="mean"); the operator must still work."""
    model = tiny_mlp(seed=19)
    x, _ = tiny_data(seed=20)
    target = torch.randn(len(x), 3, generator=torch.Generator().manual_seed(21), dtype=DT)
    w = flat_params(model)

    def loss(flat):
        w1, b1, w2, b2 = split(model, flat)
        return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - target) ** 2).mean()

    exact = torch.func.hessian(loss)(w)
    for mode in HVP_MODES:
        op = HessianOperator(model, F.mse_loss, (x, target), hvp_mode=mode)
        torch.testing.assert_close(op.to_dense(), exact, rtol=1e-10, atol=1e-12)


def test_loss_and_gradient_at_the_snapshot():
    model = tiny_mlp(seed=10)
    x, y = tiny_data(seed=11)
    op = HessianOperator(model, F.cross_entropy, [(x[:4], y[:4]), (x[4:], y[4:])])
    w = flat_params(model).requires_grad_(True)
    loss = mlp_loss(model, w, x, y)
    (expected_gradient,) = torch.autograd.grad(loss, w)
    loss = loss.detach()
    assert op.loss() == pytest.approx(loss.item(), rel=1e-12)
    torch.testing.assert_close(op.gradient(), expected_gradient, rtol=1e-10, atol=1e-12)


def test_float32_model_evaluated_in_float64_without_changing_it():
    model = tiny_mlp(seed=12).float()
    x, y = tiny_data(seed=13)
    x = x.float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    op = HessianOperator(model, F.cross_entropy, (x, y), dtype=DT)
    reference = explicit_hessian(tiny_mlp(seed=12).float().double(), x.double(), y)
    assert op.dtype == DT
    torch.testing.assert_close(op.to_dense(), reference, rtol=1e-10, atol=1e-12)
    assert all(torch.equal(before[k], v) and v.dtype == torch.float32 for k, v in model.state_dict().items())


def test_parameter_subset_gives_the_matching_hessian_block():
    model = tiny_mlp(seed=14)
    x, y = tiny_data(seed=15)
    op = HessianOperator(model, F.cross_entropy, (x, y), params=["2.weight", model[2].bias])
    exact = explicit_hessian(model, x, y)
    assert op.size == 18
    torch.testing.assert_close(op.to_dense(), exact[25:, 25:], rtol=1e-10, atol=1e-12)


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(torch.tanh(self.bn(self.fc1(x))))


def bn_net() -> BNNet:
    torch.manual_seed(16)
    net = BNNet().to(DT)
    with torch.no_grad():
        net.bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        net.bn.running_var.copy_(torch.tensor([1.5, 0.7, 1.1, 2.0]))
        net.bn.weight.copy_(torch.tensor([1.2, 0.8, 1.0, 0.9]))
        net.bn.bias.copy_(torch.tensor([0.1, 0.0, -0.1, 0.2]))
    net.bn.num_batches_tracked.fill_(7)
    return net


def bn_loss(net: BNNet, flat, x, y, batch_statistics: bool):
    w1, b1, gamma, beta, w2, b2 = split(net, flat)
    h = x @ w1.T + b1
    if batch_statistics:
        mean, var = h.mean(0), h.var(0, unbiased=False)
    else:
        mean, var = net.bn.running_mean, net.bn.running_var
    h = (h - mean) / torch.sqrt(var + net.bn.eps) * gamma + beta
    return F.cross_entropy(torch.tanh(h) @ w2.T + b2, y)


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_batchnorm_modes_match_explicit_hessians_and_leave_state_untouched(bn_mode):
    net = bn_net()
    net.train()
    net.fc2.eval()  # an arbitrary mix of flags, which must come back exactly
    g = torch.Generator().manual_seed(17)
    x, y = torch.randn(10, 3, generator=g, dtype=DT), torch.randint(0, 2, (10,), generator=g)
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [m.training for m in net.modules()]
    op = HessianOperator(net, F.cross_entropy, batches, bn_mode=bn_mode)
    train = bn_mode == "train"
    w = flat_params(net)
    exact = sum(
        (len(xb) / len(x)) * torch.func.hessian(lambda p: bn_loss(net, p, xb, yb, train))(w) for xb, yb in batches
    )
    torch.testing.assert_close(op.to_dense(), exact, rtol=1e-10, atol=1e-12)
    assert op.loss() == pytest.approx(
        float(sum((len(xb) / len(x)) * bn_loss(net, w, xb, yb, train) for xb, yb in batches)), rel=1e-12
    )
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert [m.training for m in net.modules()] == flags
    assert net.bn.track_running_stats is True


def test_batchnorm_modes_differ():
    net = bn_net()
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(18), dtype=DT)
    y = torch.tensor([0, 1] * 4)
    eval_h = HessianOperator(net, F.cross_entropy, (x, y), bn_mode="eval").to_dense()
    train_h = HessianOperator(net, F.cross_entropy, (x, y), bn_mode="train").to_dense()
    assert (eval_h - train_h).abs().max() > 1e-3


def test_bad_arguments_are_named():
    model = tiny_mlp()
    x, y = tiny_data()
    with pytest.raises(ValueError, match="bn_mode.*'batch'"):
        HessianOperator(model, F.cross_entropy, (x, y), bn_mode="batch")
    with pytest.raises(ValueError, match="hvp_mode.*'reverse'"):
        HessianOperator(model, F.cross_entropy, (x, y), hvp_mode="reverse")
    with pytest.raises(ValueError, match="unknown parameter 'fc.weight'; the model has"):
        HessianOperator(model, F.cross_entropy, (x, y), params=["fc.weight"])
    with pytest.raises(ValueError, match="no batches"):
        HessianOperator(model, F.cross_entropy, [])
    with pytest.raises(ValueError, match="same non-zero leading size"):
        HessianOperator(model, F.cross_entropy, [(x, y[:3])])
    op = HessianOperator(model, F.cross_entropy, (x, y))
    with pytest.raises(ValueError, match=r"shape \(43,\)"):
        op.matvec(torch.zeros(42, dtype=DT))
