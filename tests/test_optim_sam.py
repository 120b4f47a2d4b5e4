"""SAM / USAM / ASAM against hand-computed updates on quadratics and a functional reference implementation."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.optim import SAM, sam_update

DT = torch.float64


def spd_problem(dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random symmetric positive definite A and vector b for f(w) = ½ wᵀAw − bᵀw."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, dim, generator=gen, dtype=DT)
    return q @ q.T / dim + torch.eye(dim, dtype=DT), torch.randn(dim, generator=gen, dtype=DT)


def quadratic(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * w @ a @ w - b @ w


def sam_on_quadratic(opt: SAM, w: nn.Parameter, a, b) -> torch.Tensor:
    def closure():
        loss = quadratic(w, a, b)
        loss.backward()
        return loss

    return opt.step(closure)


def test_sam_step_with_plain_sgd_matches_hand_formula():
    a, b = spd_problem(4)
    w0 = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=DT)
    w = nn.Parameter(w0.clone())
    lr, rho = 0.1, 0.05
    opt = SAM([w], torch.optim.SGD, rho=rho, lr=lr)
    loss = sam_on_quadratic(opt, w, a, b)

    g = a @ w0 - b
    w_adv = w0 + rho * g / g.norm()
    expected = w0 - lr * (a @ w_adv - b)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(loss.detach(), quadratic(w0, a, b), rtol=0, atol=1e-12)


def test_momentum_and_coupled_weight_decay_over_three_steps_match_authors_convention():
    a, b = spd_problem(5, seed=1)
    w0 = torch.linspace(-1.0, 1.5, 5, dtype=DT)
    w = nn.Parameter(w0.clone())
    lr, rho, mu, wd = 0.05, 0.1, 0.9, 0.01
    opt = SAM([w], torch.optim.SGD, rho=rho, lr=lr, momentum=mu, weight_decay=wd)

    ref, buf = w0.clone(), None
    for _ in range(3):
        sam_on_quadratic(opt, w, a, b)
        g = a @ ref - b  # data gradient only: no weight decay in the ascent
        g_sam = a @ (ref + rho * g / g.norm()) - b
        d = g_sam + wd * ref  # weight decay at the restored w, seen by momentum
        buf = d if buf is None else mu * buf + d  # dampening 0, first step initializes the buffer
        ref = ref - lr * buf
        torch.testing.assert_close(w.detach(), ref, rtol=0, atol=1e-12)


def test_usam_is_unnormalized():
    a, b = spd_problem(3, seed=2)
    w0 = torch.tensor([1.0, -2.0, 0.5], dtype=DT)
    w = nn.Parameter(w0.clone())
    lr, rho = 0.2, 0.3
    opt = SAM([w], torch.optim.SGD, rho=rho, normalize=False, lr=lr)
    sam_on_quadratic(opt, w, a, b)
    expected = w0 - lr * (a @ (w0 + rho * (a @ w0 - b)) - b)
    torch.testing.assert_close(w.detach(), expected, rtol=0, atol=1e-12)


def test_asam_scales_weight_tensors_only():
    a, b = spd_problem(9, seed=3)
    weight = nn.Parameter(torch.tensor([[0.5, -1.0, 0.0], [2.0, 0.3, -0.7]], dtype=DT))
    bias = nn.Parameter(torch.tensor([0.1, -0.2, 0.4], dtype=DT))
    z0 = torch.cat([weight.detach().flatten(), bias.detach()])
    lr, rho, eta = 0.1, 0.5, 0.01
    opt = SAM([weight, bias], torch.optim.SGD, rho=rho, adaptive=True, eta=eta, lr=lr)

    def closure():
        loss = quadratic(torch.cat([weight.flatten(), bias]), a, b)
        loss.backward()
        return loss

    opt.step(closure)
    g = a @ z0 - b
    t = torch.cat([z0[:6].abs() + eta, torch.ones(3, dtype=DT)])  # T = |w| + η on the matrix, 1 on the bias
    eps = rho * t**2 * g / (t * g).norm()
    expected = z0 - lr * (a @ (z0 + eps) - b)
    torch.testing.assert_close(torch.cat([weight.detach().flatten(), bias.detach()]), expected, rtol=0, atol=1e-12)


def test_asam_without_normalization():
    a, b = spd_problem(4, seed=4)
    weight = nn.Parameter(torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=DT))
    z0 = weight.detach().flatten().clone()
    lr, rho, eta = 0.1, 0.2, 0.05
    opt = SAM([weight], torch.optim.SGD, rho=rho, adaptive=True, normalize=False, eta=eta, lr=lr)
    opt.step(lambda: quadratic(weight.flatten(), a, b).backward())
    g = a @ z0 - b
    expected = z0 - lr * (a @ (z0 + rho * (z0.abs() + eta) ** 2 * g) - b)
    torch.testing.assert_close(weight.detach().flatten(), expected, rtol=0, atol=1e-12)


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(DT)


def batches(count: int, size: int = 16, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 5, generator=gen, dtype=DT), torch.randint(0, 3, (size,), generator=gen))
        for _ in range(count)
    ]


@pytest.mark.parametrize(
    "base_cls, kwargs",
    [
        (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=5e-4)),
        (torch.optim.Adam, dict(lr=1e-2, weight_decay=1e-3)),
    ],
)
def test_rho_zero_is_exactly_the_base_optimizer(base_cls, kwargs):
    model_sam, model_base = tiny_mlp(), tiny_mlp()
    sam = SAM(model_sam.parameters(), base_cls, rho=0.0, **kwargs)
    base = base_cls(model_base.parameters(), **kwargs)
    for x, y in batches(4):
        sam_update(model_sam, F.cross_entropy, x, y, sam)
        base.zero_grad()
        F.cross_entropy(model_base(x), y).backward()
        base.step()
    for p, q in zip(model_sam.parameters(), model_base.parameters()):
        assert torch.equal(p, q)


def test_norm_is_global_across_groups_and_rho_is_per_group():
    p1 = nn.Parameter(torch.tensor([1.0, 2.0], dtype=DT))
    p2 = nn.Parameter(torch.tensor([-3.0], dtype=DT))
    opt = SAM([{"params": [p1]}, {"params": [p2], "rho": 0.2}], torch.optim.SGD, rho=0.05, lr=0.1)
    g1, g2 = torch.tensor([0.5, -1.5], dtype=DT), torch.tensor([2.0], dtype=DT)
    p1.grad, p2.grad = g1.clone(), g2.clone()
    opt.first_step()
    norm = torch.cat([g1, g2]).norm() + 1e-12  # one norm over both groups (per group: 1.58 and 2.0)
    torch.testing.assert_close(p1.detach(), torch.tensor([1.0, 2.0], dtype=DT) + 0.05 * g1 / norm, rtol=0, atol=1e-15)
    torch.testing.assert_close(p2.detach(), torch.tensor([-3.0], dtype=DT) + 0.2 * g2 / norm, rtol=0, atol=1e-15)
    opt.restore()
    assert p1.tolist() == [1.0, 2.0] and p2.tolist() == [-3.0]


def test_weight_decay_stays_out_of_the_ascent_direction():
    a, b = spd_problem(3, seed=5)
    w0 = torch.tensor([4.0, -3.0, 2.5], dtype=DT)
    w = nn.Parameter(w0.clone())
    lr, rho, wd = 0.01, 0.1, 10.0
    opt = SAM([w], torch.optim.SGD, rho=rho, lr=lr, weight_decay=wd)
    quadratic(w, a, b).backward()
    opt.first_step()
    g = a @ w0 - b
    torch.testing.assert_close(w.detach() - w0, rho * g / g.norm(), rtol=0, atol=1e-14)
    adv = w.detach().clone()
    opt.zero_grad()
    quadratic(w, a, b).backward()
    opt.second_step()
    torch.testing.assert_close(w.detach(), w0 - lr * ((a @ adv - b) + wd * w0), rtol=0, atol=1e-13)


def test_restore_is_bit_exact_after_many_steps():
    model = nn.Sequential(nn.Linear(7, 13), nn.ReLU(), nn.Linear(13, 4))  # float32: drift would show at once
    start = copy.deepcopy(model.state_dict())
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.0, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        x, y = torch.randn(9, 7, generator=gen), torch.randint(0, 4, (9,), generator=gen)
        sam_update(model, F.cross_entropy, x, y, opt)
    for name, value in model.state_dict().items():
        assert torch.equal(value, start[name]), name


def test_first_step_then_restore_leaves_the_gradient_alone():
    w = nn.Parameter(torch.tensor([1.0, -1.0], dtype=DT))
    opt = SAM([w], torch.optim.SGD, lr=0.1)
    w.grad = torch.tensor([3.0, 4.0], dtype=DT)
    opt.first_step()
    torch.testing.assert_close(w.detach(), torch.tensor([1.03, -0.96], dtype=DT), rtol=0, atol=1e-13)
    assert w.grad.tolist() == [3.0, 4.0]
    opt.restore()
    assert w.tolist() == [1.0, -1.0]


def train_steps(model, opt, data):
    for x, y in data:
        sam_update(model, F.cross_entropy, x, y, opt)


def test_state_dict_round_trip_continues_bit_identically():
    data = batches(6, seed=3)
    model = tiny_mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.07, lr=0.1, momentum=0.9, weight_decay=5e-4)
    train_steps(model, opt, data[:3])
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    train_steps(model, opt, data[3:])

    fresh = tiny_mlp(seed=99)
    fresh.load_state_dict(saved_model)
    fresh_opt = SAM(fresh.parameters(), torch.optim.SGD, rho=0.9, normalize=False, lr=1.0, momentum=0.9)
    fresh_opt.load_state_dict(saved_opt)
    assert fresh_opt.param_groups[0]["rho"] == 0.07 and fresh_opt.normalize is True
    assert fresh_opt.param_groups[0]["lr"] == 0.1 and fresh_opt.param_groups[0]["weight_decay"] == 5e-4
    assert fresh_opt.param_groups is fresh_opt.base_optimizer.param_groups
    assert len(fresh_opt.base_optimizer.state) == 4  # one momentum buffer per parameter
    train_steps(fresh, fresh_opt, data[3:])
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)


def test_scheduler_on_sam_sets_base_lr_and_scheduler_on_base_sets_sam_lr():
    model = tiny_mlp()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    step_lr = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    x, y = batches(1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "scheduler.step() before optimizer.step()" warning either
        for _ in range(2):
            sam_update(model, F.cross_entropy, x, y, opt)
            step_lr.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.01, rel=1e-12)

    model2 = tiny_mlp()
    opt2 = SAM(model2.parameters(), torch.optim.SGD, lr=0.1)
    multi = torch.optim.lr_scheduler.MultiStepLR(opt2.base_optimizer, milestones=[1, 3], gamma=0.5)
    lrs = []
    for _ in range(4):
        sam_update(model2, F.cross_entropy, x, y, opt2)
        multi.step()
        lrs.append(opt2.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.05, 0.05, 0.025, 0.025], rel=1e-12)


def test_adamw_base_matches_hand_written_adamw_on_the_sam_gradient():
    a, b = spd_problem(3, seed=6)
    w0 = torch.tensor([1.0, -0.5, 2.0], dtype=DT)
    w = nn.Parameter(w0.clone())
    lr, rho, wd, (b1, b2), eps = 0.01, 0.05, 0.1, (0.9, 0.999), 1e-8
    opt = SAM([w], torch.optim.AdamW, rho=rho, lr=lr, weight_decay=wd, betas=(b1, b2), eps=eps)
    assert opt.param_groups[0]["eps"] == eps  # Adam's own eps is not SAM's norm_eps
    ref, m, v = w0.clone(), torch.zeros(3, dtype=DT), torch.zeros(3, dtype=DT)
    for t in (1, 2):
        sam_on_quadratic(opt, w, a, b)
        g = a @ ref - b
        gs = a @ (ref + rho * g / g.norm()) - b
        ref = ref * (1 - lr * wd)  # decoupled decay
        m, v = b1 * m + (1 - b1) * gs, b2 * v + (1 - b2) * gs**2
        ref = ref - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        torch.testing.assert_close(w.detach(), ref, rtol=0, atol=1e-12)


def test_adam_base_feeds_the_sam_gradient():
    a, b = spd_problem(3, seed=7)
    w0 = torch.tensor([0.2, 0.4, -1.0], dtype=DT)
    w = nn.Parameter(w0.clone())
    lr, rho = 0.1, 0.3
    opt = SAM([w], torch.optim.Adam, rho=rho, lr=lr)
    sam_on_quadratic(opt, w, a, b)
    g = a @ w0 - b
    gs = a @ (w0 + rho * g / g.norm()) - b
    # First Adam step: bias-corrected moments are gs and gs², so the step is lr·gs/(|gs| + eps).
    torch.testing.assert_close(w.detach(), w0 - lr * gs / (gs.abs() + 1e-8), rtol=0, atol=1e-12)


def test_step_works_under_no_grad_and_returns_the_clean_loss():
    a, b = spd_problem(2, seed=8)
    w = nn.Parameter(torch.tensor([1.0, 1.0], dtype=DT))
    opt = SAM([w], torch.optim.SGD, lr=0.1)
    with torch.no_grad():
        loss = sam_on_quadratic(opt, w, a, b)
    assert loss.item() == pytest.approx(quadratic(torch.tensor([1.0, 1.0], dtype=DT), a, b).item(), abs=1e-14)
    assert not torch.equal(w.detach(), torch.tensor([1.0, 1.0], dtype=DT))


def test_add_param_group_reaches_the_base_optimizer():
    p1, p2 = nn.Parameter(torch.ones(2, dtype=DT)), nn.Parameter(torch.ones(3, dtype=DT))
    opt = SAM([p1], torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    opt.add_param_group({"params": [p2], "rho": 0.3})
    assert len(opt.base_optimizer.param_groups) == 2
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["rho"] == 0.3
    assert opt.param_groups[1]["adaptive"] is False


def reference_sam_sgd(params, data, rho, lr, momentum, wd):
    """Authors' semantics written functionally: global-norm ascent, gradient at w+ε, coupled decay, heavy ball."""

    def loss(ps, x, y):
        hidden = torch.tanh(x @ ps["0.weight"].T + ps["0.bias"])
        return F.cross_entropy(hidden @ ps["2.weight"].T + ps["2.bias"], y)

    grad = torch.func.grad(loss)
    params, buffers, trajectory = dict(params), {}, []
    for step, (x, y) in enumerate(data):
        g = grad(params, x, y)
        norm = torch.sqrt(sum((v**2).sum() for v in g.values()))
        g_sam = grad({k: params[k] + rho * g[k] / (norm + 1e-12) for k in params}, x, y)
        for k in params:
            d = g_sam[k] + wd * params[k]
            buffers[k] = d if step == 0 else momentum * buffers[k] + d
            params[k] = params[k] - lr * buffers[k]
        trajectory.append(dict(params))
    return trajectory


def test_twenty_steps_agree_with_an_independent_functional_reference():
    model = tiny_mlp(seed=5)
    data = batches(20, seed=11)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    expected = reference_sam_sgd(start, data, rho=0.1, lr=0.2, momentum=0.9, wd=5e-4)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.2, momentum=0.9, weight_decay=5e-4)
    for (x, y), ref in zip(data, expected):
        sam_update(model, F.cross_entropy, x, y, opt)
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), ref[name], rtol=0, atol=1e-10)
    moved = sum((p.detach() - start[k]).abs().sum() for k, p in model.named_parameters())
    assert moved > 0.1  # the comparison covered real motion


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rho=-0.1), "rho must be a finite number >= 0, got -0.1"),
        (dict(rho=float("nan")), "rho must be a finite number"),
        (dict(eta=-1.0), "eta must be"),
        (dict(norm_eps=-1e-3), "norm_eps must be"),
        (dict(normalize="yes"), "normalize must be True or False"),
        (dict(adaptive=1), "adaptive must be True or False"),
        (dict(moment=0.9), r"unknown argument\(s\) \['moment'\].*momentum"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    w = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=match):
        SAM([w], torch.optim.SGD, lr=0.1, **kwargs)


def test_bad_base_and_bad_group_raise():
    w = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="Optimizer subclass"):
        SAM([w], "sgd", lr=0.1)
    with pytest.raises(ValueError, match=r"Adadelta uses the parameter-group key\(s\) \['rho'\]"):
        SAM([w], torch.optim.Adadelta)
    with pytest.raises(ValueError, match="rho must be a finite number >= 0, got -1"):
        SAM([{"params": [w], "rho": -1}], torch.optim.SGD, lr=0.1)


def test_misordered_calls_raise():
    w = nn.Parameter(torch.ones(2))
    opt = SAM([w], torch.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match="no gradients"):
        opt.first_step()
    with pytest.raises(RuntimeError, match="needs a preceding first_step"):
        opt.second_step()
    with pytest.raises(ValueError, match="needs a closure"):
        opt.step()
    w.grad = torch.ones(2)
    opt.first_step()
    with pytest.raises(RuntimeError, match="called twice"):
        opt.first_step()
    with pytest.raises(RuntimeError, match="perturbed"):
        opt.base_step()


def test_step_restores_the_weights_when_the_second_closure_call_fails():
    w = nn.Parameter(torch.tensor([1.0, 2.0], dtype=DT))
    opt = SAM([w], torch.optim.SGD, rho=0.5, lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("loss is nan")
        loss = (w**2).sum()
        loss.backward()
        return loss

    with pytest.raises(FloatingPointError):
        opt.step(closure)
    assert w.tolist() == [1.0, 2.0]
