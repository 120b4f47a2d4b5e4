"""frozen_bn_stats: batch statistics for normalization, running statistics untouched, for every BatchNorm flavour."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.optim import SAM, frozen_bn_stats, sam_update

DT = torch.float64

FLAVOURS = {
    "bn1d-momentum": lambda: nn.BatchNorm1d(3, momentum=0.1),
    "bn1d-cumulative": lambda: nn.BatchNorm1d(3, momentum=None),
    "bn2d": lambda: nn.BatchNorm2d(3, momentum=0.3),
    "bn2d-cumulative": lambda: nn.BatchNorm2d(3, momentum=None),
    "bn3d": lambda: nn.BatchNorm3d(3),
    "syncbn": lambda: nn.SyncBatchNorm(3, momentum=0.1),
    "syncbn-cumulative": lambda: nn.SyncBatchNorm(3, momentum=None),
}
SHAPES = {"bn1d": (6, 3), "bn2d": (6, 3, 2, 2), "bn3d": (6, 3, 2, 1, 2), "syncbn": (6, 3, 2)}


def make_layer(flavour: str) -> tuple[nn.Module, tuple[int, ...]]:
    """A BatchNorm layer with non-trivial running statistics, affine parameters and batch count."""
    torch.manual_seed(0)
    layer = FLAVOURS[flavour]().to(DT)
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        layer.running_var.copy_(torch.tensor([1.5, 0.2, 3.0]))
        layer.num_batches_tracked.fill_(4)
        layer.weight.copy_(torch.tensor([1.2, 0.7, -0.4]))
        layer.bias.copy_(torch.tensor([0.1, 0.0, -0.3]))
    return layer, SHAPES[flavour.split("-")[0]]


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean, biased and unbiased variance of an (N, C, ...) tensor, by hand."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    mean = flat.mean(dim=1)
    sq = ((flat - mean[:, None]) ** 2).sum(dim=1)
    return mean, sq / flat.shape[1], sq / (flat.shape[1] - 1)


def normalized(x, mean, var, layer) -> torch.Tensor:
    view = (1, -1) + (1,) * (x.dim() - 2)
    w, b = layer.weight.detach().view(view), layer.bias.detach().view(view)
    return (x - mean.view(view)) / torch.sqrt(var.view(view) + layer.eps) * w + b


def buffers(layer) -> list[torch.Tensor]:
    return [layer.running_mean.clone(), layer.running_var.clone(), layer.num_batches_tracked.clone()]


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_train_mode_uses_batch_stats_and_leaves_buffers_untouched(flavour):
    layer, shape = make_layer(flavour)
    x = torch.randn(shape, dtype=DT, generator=torch.Generator().manual_seed(1)) * 2 + 1
    before = buffers(layer)
    with frozen_bn_stats(layer):
        out = layer(x)
        layer(x * 3)  # a second pass changes nothing either
    for b, a in zip(before, buffers(layer)):
        assert torch.equal(b, a)
    mean, biased, _ = channel_stats(x)
    torch.testing.assert_close(out, normalized(x, mean, biased, layer), rtol=0, atol=1e-12)


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_updates_resume_exactly_after_the_block(flavour):
    layer, shape = make_layer(flavour)
    x = torch.randn(shape, dtype=DT, generator=torch.Generator().manual_seed(2)) - 0.5
    with frozen_bn_stats(layer):
        layer(x)
    mean0, var0, count0 = buffers(layer)
    layer(x)
    mean, _, unbiased = channel_stats(x)
    factor = 1.0 / (count0.item() + 1) if layer.momentum is None else layer.momentum  # cumulative: 1/5
    torch.testing.assert_close(layer.running_mean, (1 - factor) * mean0 + factor * mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.running_var, (1 - factor) * var0 + factor * unbiased, rtol=0, atol=1e-12)
    assert layer.num_batches_tracked.item() == count0.item() + 1
    assert layer.track_running_stats is True


def test_eval_mode_normalizes_with_running_stats_inside_the_block():
    layer, shape = make_layer("bn1d-cumulative")
    layer.eval()
    x = torch.randn(shape, dtype=DT, generator=torch.Generator().manual_seed(3))
    before = buffers(layer)
    with frozen_bn_stats(layer):
        out = layer(x)
    torch.testing.assert_close(out, normalized(x, before[0], before[1], layer), rtol=0, atol=1e-12)
    for b, a in zip(before, buffers(layer)):
        assert torch.equal(b, a)


def test_nested_modules_untracked_layers_and_exceptions():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, momentum=None))
            self.untracked = nn.BatchNorm1d(3, track_running_stats=False)

        def forward(self, x):
            return self.untracked(self.inner(x))

    model = nn.Sequential(nn.BatchNorm1d(3), Block()).to(DT)
    tracked = [model[0], model[1].inner[1]]
    x = torch.randn(5, 3, dtype=DT)
    before = [buffers(layer) for layer in tracked]
    with pytest.raises(RuntimeError, match="boom"):
        with frozen_bn_stats(model):
            model(x)
            raise RuntimeError("boom")
    for layer, saved in zip(tracked, before):
        for b, a in zip(saved, buffers(layer)):
            assert torch.equal(b, a)
        assert layer.track_running_stats is True
    assert model[1].untracked.track_running_stats is False
    model(x)
    assert [layer.num_batches_tracked.item() for layer in tracked] == [1, 1]


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 6),
        nn.BatchNorm1d(6, momentum=None),
        nn.ReLU(),
        nn.Linear(6, 3),
    ).to(DT)


def test_sam_update_stats_come_from_the_clean_pass_only():
    model, clean = bn_net(), bn_net()
    x = torch.randn(8, 2, 4, 4, dtype=DT, generator=torch.Generator().manual_seed(4))
    y = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(5))
    clean_out = clean(x)  # one train-mode pass at the starting weights: the statistics SAM must end with
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    loss, out = sam_update(model, F.cross_entropy, x, y, opt)
    for name, buf in model.named_buffers():
        assert torch.equal(buf, dict(clean.named_buffers())[name]), name
    torch.testing.assert_close(out, clean_out.detach(), rtol=0, atol=0)
    torch.testing.assert_close(loss, F.cross_entropy(clean_out, y).detach(), rtol=0, atol=0)


def test_perturbed_pass_normalizes_with_its_own_batch_statistics():
    model = bn_net()
    x = torch.randn(8, 2, 4, 4, dtype=DT, generator=torch.Generator().manual_seed(6))
    y = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(7))
    rho, lr = 0.3, 0.1
    reference = copy.deepcopy(model)
    # Oracle: gradient at w + ε of the train-mode (batch-statistics) loss, computed on a copy; then SGD at w.
    F.cross_entropy(reference(x), y).backward()
    grads = [p.grad.clone() for p in reference.parameters()]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    start = [p.detach().clone() for p in reference.parameters()]
    with torch.no_grad():
        for p, g in zip(reference.parameters(), grads):
            p.add_(rho * g / (norm + 1e-12))
    reference.zero_grad()
    F.cross_entropy(reference(x), y).backward()
    expected = [w - lr * p.grad for w, p in zip(start, reference.parameters())]

    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr)
    sam_update(model, F.cross_entropy, x, y, opt)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-12)
