"""A SAM update run inside ONE autocast region takes its perturbed pass at w + ε, not at autocast's cached copy of
w: it equals the same update with every forward pass in its own autocast region (where no cast can be reused)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.optim import SAM, sam_update


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))


class OwnRegion(nn.Module):
    """Each forward pass in a fresh bf16 autocast region (the loss too), so no cached cast survives a pass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(x)


def own_region_loss(out, y):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return F.cross_entropy(out, y)


def sam(model: nn.Module, rho: float = 0.5) -> SAM:
    return SAM(model.parameters(), torch.optim.SGD, rho=rho, lr=0.2, momentum=0.9, model=model)


@pytest.mark.parametrize("kwargs", [{}, {"m": 8}, {"micro_batch": 8}])
def test_one_region_equals_a_region_per_pass_and_is_not_a_plain_gradient_step(kwargs):
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)) for _ in range(3)]
    one, per_pass, plain = net(), net(), net()
    opt_one, opt_per_pass, opt_plain = sam(one), sam(per_pass), sam(plain, rho=0.0)
    for x, y in data:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sam_update(one, F.cross_entropy, x, y, opt_one, **kwargs)
            sam_update(plain, F.cross_entropy, x, y, opt_plain, **kwargs)
        sam_update(OwnRegion(per_pass), own_region_loss, x, y, opt_per_pass, **kwargs)
    for key, value in one.state_dict().items():
        assert torch.equal(value, per_pass.state_dict()[key]), key
    assert (one[0].weight - plain[0].weight).abs().max() > 1e-3  # ε reached the linear layers' bf16 casts
