"""analyze(): JSON-ready numbers that agree with the explicit Hessian, deterministic for a seed."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.hessian import ANALYSES, analyze

DT = torch.float64


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(10, 3, generator=g, dtype=DT), torch.randint(0, 2, (10,), generator=g)
    shapes = [p.shape for p in model.parameters()]
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat):
        w1, b1, w2, b2 = (t.view(s) for t, s in zip(torch.split(flat, [s.numel() for s in shapes]), shapes))
        return F.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y)

    return model, [(x[:5], y[:5]), (x[5:], y[5:])], torch.linalg.eigvalsh(torch.func.hessian(loss)(w)), float(loss(w))


def test_every_analysis_is_json_serializable_and_deterministic(setup):
    model, batches, _, _ = setup
    options = dict(what=ANALYSES, n_probes=4, density_steps=10, ascent_steps=3, nonuniformity_orders=(2,))
    first = analyze(model, F.cross_entropy, batches, **options)
    second = analyze(model, F.cross_entropy, batches, **options)
    assert json.loads(json.dumps(first)) == first == second
    assert set(ANALYSES) <= set(first)


def test_values_agree_with_the_explicit_hessian(setup):
    model, batches, eigenvalues, loss = setup
    report = analyze(model, F.cross_entropy, batches, what=("lambda_max", "trace", "moments"), top_k=3, n_probes=12)
    assert report["n_params"] == 26 and report["n_examples"] == 10
    assert report["loss"] == pytest.approx(loss, rel=1e-12)
    assert report["lambda_max"]["top_eigenvalues"] == pytest.approx(eigenvalues.flip(0)[:3].tolist(), rel=1e-6)
    trace = report["trace"]
    assert abs(trace["value"] - float(eigenvalues.sum())) < 4 * trace["standard_error"]
    second = report["moments"]["2"]
    assert abs(second["value"] - float((eigenvalues**2).mean())) < 4 * second["standard_error"]


def test_cached_double_backward_gives_the_same_report(setup):
    model, batches, _, _ = setup
    what = ("lambda_max", "trace")
    plain = analyze(model, F.cross_entropy, batches, what=what, n_probes=5)
    cached = analyze(model, F.cross_entropy, batches, what=what, n_probes=5, hvp_mode="double_backward", cache=True)
    assert cached["lambda_max"]["top_eigenvalues"] == pytest.approx(plain["lambda_max"]["top_eigenvalues"], rel=1e-9)
    assert cached["trace"]["value"] == pytest.approx(plain["trace"]["value"], rel=1e-9)


def test_unknown_analysis_is_named(setup):
    model, batches, _, _ = setup
    with pytest.raises(ValueError, match=r"unknown analyses \['spectrum'\]"):
        analyze(model, F.cross_entropy, batches, what=("lambda_max", "spectrum"))
