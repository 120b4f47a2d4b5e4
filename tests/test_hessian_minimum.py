"""measure_minimum against explicit per-example Hessians (torch.func.hessian of the MLP written out by hand)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.hessian.minimum import measure_minimum
from samscale.hessian.moments import nonuniformity, nonuniformity_result

DT = torch.float64


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(10, 3, generator=g, dtype=DT), torch.randint(0, 2, (10,), generator=g)
    shapes = [p.shape for p in model.parameters()]
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def example_loss(flat, xi, yi):
        w1, b1, w2, b2 = (t.view(s) for t, s in zip(torch.split(flat, [s.numel() for s in shapes]), shapes))
        return F.cross_entropy((torch.tanh(xi @ w1.T + b1) @ w2.T + b2).unsqueeze(0), yi.unsqueeze(0))

    per_example = torch.stack([torch.func.hessian(example_loss)(w, x[i], y[i]) for i in range(10)])
    loss = float(torch.stack([example_loss(w, x[i], y[i]) for i in range(10)]).mean())
    return model, (x, y), per_example, loss


def explicit_s(per_example: torch.Tensor, k: int) -> float:
    moment = torch.stack([torch.linalg.matrix_power(h, k) for h in per_example]).mean(0)
    top = float(torch.linalg.eigvalsh(moment - torch.linalg.matrix_power(per_example.mean(0), k))[-1])
    return math.pow(top, 1 / k) if top > 0 else 0.0


def test_measure_minimum_matches_explicit_eigenvalues(problem):
    model, batch, per_example, loss = problem
    size = per_example.shape[-1]  # 22 parameters: max_matvecs ≥ size makes every Lanczos run exact
    result = measure_minimum(model, F.cross_entropy, batch, top_k=3, max_matvecs=size, tol=1e-10)
    exact = torch.linalg.eigvalsh(per_example.mean(0)).flip(0)
    assert result.loss == pytest.approx(loss, rel=1e-12)
    assert result.top_eigenvalues == pytest.approx(exact[:3].tolist(), rel=1e-8)
    assert result.sharpness == result.top_eigenvalues[0]
    for k in (2, 3, 4):
        assert result.s[k] == pytest.approx(explicit_s(per_example, k), rel=1e-6, abs=1e-10)
        assert result.s_converged[k]
    assert result.as_dict()["s"]["2"] == result.s[2]


def test_nonuniformity_is_the_value_of_its_result(problem):
    model, batch, per_example, _ = problem
    full = nonuniformity_result(model, F.cross_entropy, batch, 2, generator=torch.Generator().manual_seed(3))
    assert full.value == nonuniformity(model, F.cross_entropy, batch, 2, generator=torch.Generator().manual_seed(3))
    assert full.value == pytest.approx(math.sqrt(full.top_eigenvalue), rel=1e-12)
    assert full.value == pytest.approx(explicit_s(per_example, 2), rel=1e-6)
    assert full.converged and 1 <= full.n_matvec <= per_example.shape[-1]


def test_bad_settings_are_named(problem):
    model, batch, _, _ = problem
    with pytest.raises(ValueError, match="top_k.*0"):
        measure_minimum(model, F.cross_entropy, batch, top_k=0)
    with pytest.raises(ValueError, match="orders.*1"):
        measure_minimum(model, F.cross_entropy, batch, orders=(1, 2))
