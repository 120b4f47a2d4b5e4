"""Cheap SAM variants against hand-computed steps (float64, least squares with closed-form gradients), and the
gradient evaluations every run records against closed-form counts."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from samscale.optim import SAM
from samscale.optim.cheap import LateSAM, RandomSAM
from samscale.optim.looksam import LookSAM
from samscale.optim.momentum_sam import MomentumSAM
from samscale.spec.run import build_spec
from samscale.train.loop import RANDOM_SAM_SEED_OFFSET, train_run

LR, MOMENTUM, WD, RHO = 0.1, 0.9, 0.01, 0.2
RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 3))
Y = RNG.normal(size=8)


def grad(w):
    """∇ of mean((X w[:3] + w[3] − y)²), by hand."""
    r = X @ w[:3] + w[3] - Y
    return np.concatenate([2 * X.T @ r / len(Y), [2 * r.mean()]])


def sam_grad(w):
    g = grad(w)
    return grad(w + RHO * g / (np.linalg.norm(g) + 1e-12))


class Momentum:
    """torch.optim.SGD's update with momentum and coupled weight decay, by hand."""

    def __init__(self):
        self.buf = None

    def step(self, w, g):
        d = g + WD * w
        self.buf = d.copy() if self.buf is None else MOMENTUM * self.buf + d
        return w - LR * self.buf


W0 = np.array([0.3, -0.2, 0.5, 0.1])


def torch_setup():
    model = nn.Linear(3, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(W0[:3]).reshape(1, 3))
        model.bias.copy_(torch.tensor(W0[3:]))
    sam = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    return model, sam


def loss_fn(out, y):
    return ((out.reshape(-1) - y) ** 2).mean()


def weights(model):
    return np.concatenate([model.weight.detach().numpy().ravel(), model.bias.detach().numpy()])


def run(variant_cls, steps, **kwargs):
    model, sam = torch_setup()
    variant = variant_cls(sam, steps, **kwargs)
    x, y = torch.tensor(X), torch.tensor(Y)
    costs = [variant.update(model, loss_fn, x, y) for _ in range(steps)]
    return weights(model), costs


def test_looksam_matches_hand_computed_steps():
    k, alpha = 3, 0.5
    w, opt, g_v = W0.copy(), Momentum(), None
    for t in range(7):
        g = grad(w)
        if t % k == 0:
            g_s = sam_grad(w)
            g_v = g_s - (g_s @ g) / (g @ g) * g
            direction = g_s
        else:
            direction = g + alpha * np.linalg.norm(g) / np.linalg.norm(g_v) * g_v
        w = opt.step(w, direction)
    got, costs = run(LookSAM, 7, k=k, alpha=alpha)
    np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-14)
    assert [c.grad_evals for c in costs] == [2, 1, 1, 2, 1, 1, 2]


def test_looksam_with_k_1_is_sam():
    w, opt = W0.copy(), Momentum()
    for _ in range(4):
        w = opt.step(w, sam_grad(w))
    np.testing.assert_allclose(run(LookSAM, 4, k=1, alpha=0.7)[0], w, rtol=1e-12, atol=1e-14)


def test_late_sam_is_sgd_then_sam():
    w, opt = W0.copy(), Momentum()
    for t in range(5):
        w = opt.step(w, sam_grad(w) if t >= int(0.4 * 5) else grad(w))
    got, costs = run(LateSAM, 5, start=0.4)
    np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-14)
    assert [c.grad_evals for c in costs] == [1, 1, 2, 2, 2]


def test_random_sam_follows_its_draws_and_schedule():
    steps, seed = 12, 7
    draws = torch.rand(steps, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()
    p = [0.1 + (0.9 - 0.1) * t / (steps - 1) for t in range(steps)]
    w, opt = W0.copy(), Momentum()
    for t in range(steps):
        w = opt.step(w, sam_grad(w) if draws[t] < p[t] else grad(w))
    got, costs = run(RandomSAM, steps, p_start=0.1, p_end=0.9, seed=seed)
    np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-14)
    assert [c.grad_evals for c in costs] == [2 if draws[t] < p[t] else 1 for t in range(steps)]
    assert 1 in [c.grad_evals for c in costs] and 2 in [c.grad_evals for c in costs]


def test_momentum_sam_ascends_along_the_momentum_buffer():
    w, opt = W0.copy(), Momentum()
    for t in range(5):
        if opt.buf is None:
            g = grad(w)
        else:
            g = grad(w + RHO * opt.buf / (np.linalg.norm(opt.buf) + 1e-12))
        w = opt.step(w, g)
    got, costs = run(MomentumSAM, 5)
    np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-14)
    assert [c.grad_evals for c in costs] == [1] * 5


def test_variant_state_resumes_identically():
    model, sam = torch_setup()
    variant = RandomSAM(sam, 10, p_start=0.5, p_end=None, seed=3)
    x, y = torch.tensor(X), torch.tensor(Y)
    for _ in range(4):
        variant.update(model, loss_fn, x, y)
    state = variant.state_dict()
    again = RandomSAM(sam, 10, p_start=0.5, p_end=None, seed=99)
    again.load_state_dict(state)
    assert again.steps == 4
    assert torch.rand(3, generator=again.generator).tolist() == torch.rand(3, generator=variant.generator).tolist()
    with pytest.raises(ValueError, match="looksam"):
        LookSAM(sam, 10, k=0, alpha=0.7)
    with pytest.raises(ValueError, match="late_sam"):
        LateSAM(sam, 10, start=1.5)


# 384 training examples in batches of 64: 6 steps per epoch, 3 epochs → 18 steps.
STEPS = 18


@pytest.mark.parametrize("overrides, expected", [
    (["optim.name=sgd"], STEPS),
    (["optim.name=sam"], 2 * STEPS),
    (["optim.name=sam", "optim.m=16"], 2 * STEPS),  # m-sharpness: each chunk's passes are parts of one batch pass
    (["optim.name=looksam", "optim.looksam_k=5"], STEPS + math.ceil(STEPS / 5)),
    (["optim.name=late_sam", "optim.late_start=0.5"], STEPS + (STEPS - int(0.5 * STEPS))),
    (["optim.name=momentum_sam"], STEPS),
    (["optim.name=random_sam", "optim.random_p=0.0"], STEPS),
    (["optim.name=random_sam", "optim.random_p=1.0"], 2 * STEPS),
])
def test_grad_evals_match_closed_form_counts(tiny_config, overrides, expected):
    result = train_run(build_spec(tiny_config, overrides + ["optim.rho=0.05"]))
    assert result.status == "complete"
    assert result.final["grad_evals"] == expected
    assert result.final["sequential_grad_evals"] == expected  # one process: every pass is on the critical path
    assert result.final["optimizer_seconds"] > 0 and result.final["peak_memory_mb"] > 0


def test_random_sam_counts_its_drawn_sam_steps(tiny_config):
    spec = build_spec(tiny_config, ["optim.name=random_sam", "optim.random_p=0.2", "optim.random_p_end=0.8"])
    draws = torch.rand(STEPS, generator=torch.Generator().manual_seed(spec.train.seed + RANDOM_SAM_SEED_OFFSET),
                       dtype=torch.float64).tolist()
    sam_steps = sum(u < 0.2 + 0.6 * t / (STEPS - 1) for t, u in enumerate(draws))
    assert train_run(spec).final["grad_evals"] == STEPS + sam_steps


def test_optimizer_state_memory_is_counted_exactly(tiny_config):
    sgd = train_run(build_spec(tiny_config, ["optim.name=sgd"])).final
    sam = train_run(build_spec(tiny_config, ["optim.name=sam"])).final
    looksam = train_run(build_spec(tiny_config, ["optim.name=looksam"])).final
    params_mb = sgd["n_params"] * 4 / 2**20
    assert sgd["optimizer_state_mb"] == pytest.approx(params_mb)  # momentum buffers
    assert sam["optimizer_state_mb"] == pytest.approx(2 * params_mb)  # + the buffer that holds w + ε
    assert looksam["optimizer_state_mb"] == pytest.approx(3 * params_mb)  # + the stored orthogonal direction


@pytest.mark.parametrize("name", ["looksam", "late_sam", "random_sam", "momentum_sam"])
def test_variant_resume_equals_uninterrupted(tiny_config, tmp_path, name):
    spec = build_spec(tiny_config, [f"optim.name={name}", "train.epochs=4", "optim.looksam_k=4"])
    whole = train_run(spec, workdir=tmp_path / "a")
    train_run(spec, workdir=tmp_path / "b", max_epochs=2)
    resumed = train_run(spec, workdir=tmp_path / "b")
    assert [row["train_loss"] for row in resumed.history] == [row["train_loss"] for row in whole.history]
    assert resumed.final["grad_evals"] == whole.final["grad_evals"]


def test_variant_settings_enter_only_their_own_run_ids(tiny_config):
    sam = build_spec(tiny_config, ["optim.name=sam"])
    assert build_spec(tiny_config, ["optim.name=sam", "optim.looksam_k=9"]).run_id == sam.run_id
    looksam = build_spec(tiny_config, ["optim.name=looksam"])
    assert build_spec(tiny_config, ["optim.name=looksam", "optim.looksam_k=9"]).run_id != looksam.run_id
    assert build_spec(tiny_config, ["optim.name=looksam", "optim.late_start=0.9"]).run_id == looksam.run_id
    with pytest.raises(ValueError, match="momentum"):
        build_spec(tiny_config, ["optim.name=momentum_sam", "optim.momentum=0"])


def test_variants_refuse_runs_they_cannot_train(tiny_config):
    with pytest.raises(ValueError, match="one process"):
        build_spec(tiny_config, ["optim.name=looksam", "runtime.nproc=2"])
    with pytest.raises(ValueError, match="m-sharpness"):
        build_spec(tiny_config, ["optim.name=late_sam", "optim.m=16"])
