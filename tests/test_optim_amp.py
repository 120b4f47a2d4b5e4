"""SAM under mixed precision: GradScaler (scaled passes, unscaled ascent, skipped overflowing updates) and bf16."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.optim import SAM, frozen_bn_stats, sam_update


def net(bn: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 16), nn.BatchNorm1d(16)] if bn else [nn.Linear(6, 16)]
    return nn.Sequential(*layers, nn.Tanh(), nn.Linear(16, 4))


def data(steps: int, n: int = 12, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 6, generator=gen), torch.randint(0, 4, (n,), generator=gen)) for _ in range(steps)]


def sam(model: nn.Module) -> SAM:
    return SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.2, momentum=0.9, weight_decay=5e-4)


def scaler(scale: float = 2.0**14, **kwargs) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cpu", init_scale=scale, **kwargs)


def snapshot(model: nn.Module, opt: SAM) -> tuple[dict, dict]:
    state = opt.state_dict()["state"]
    return copy.deepcopy(model.state_dict()), {k: {n: t.clone() for n, t in v.items()} for k, v in state.items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same(a[key], b[key])
        else:
            assert torch.equal(a[key], b[key]), key


def test_grad_scaler_on_cpu_exists_in_this_torch():
    s = scaler(1024.0)
    assert s.is_enabled() and s.get_scale() == 1024.0


@pytest.mark.parametrize("kwargs", [{}, {"m": 5}, {"micro_batch": 4}, {"m": 6, "micro_batch": 4}])
@pytest.mark.parametrize("bn", [False, True])
def test_power_of_two_scale_gives_exactly_the_unscaled_update(kwargs, bn):
    """Scaling by 2^k and unscaling is exact, so every step must equal the unscaled one bit for bit."""
    plain, scaled = net(bn), net(bn)
    opt_plain, opt_scaled, grad_scaler = sam(plain), sam(scaled), scaler()
    for x, y in data(4):
        loss_a, out_a = sam_update(plain, F.cross_entropy, x, y, opt_plain, **kwargs)
        loss_b, out_b = sam_update(scaled, F.cross_entropy, x, y, opt_scaled, scaler=grad_scaler, **kwargs)
        assert torch.equal(loss_a, loss_b) and torch.equal(out_a, out_b)
    assert_same(plain.state_dict(), scaled.state_dict())
    assert_same(snapshot(plain, opt_plain)[1], snapshot(scaled, opt_scaled)[1])
    assert grad_scaler.get_scale() == 2.0**14  # no overflow, no growth before growth_interval


def test_ascent_uses_the_unscaled_gradient_norm():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = SAM([w], torch.optim.SGD, rho=0.5, normalize=False, lr=0.1)  # USAM: ε = ρ g, so a scaled g would show
    s = scaler(256.0)
    s.scale((w**2).sum()).backward()  # g = 2w, scaled by 256
    assert opt.first_step(scaler=s)
    assert w.tolist() == [1.0 + 0.5 * 2.0, -2.0 + 0.5 * -4.0]
    opt.restore()


def overflowing(call_to_break: int):
    """A loss that is infinite on the given call (1 = first clean pass, 2 = first perturbed pass, ...)."""
    calls = []

    def loss_fn(out, target):
        calls.append(1)
        loss = F.cross_entropy(out, target)
        return loss * float("inf") if len(calls) == call_to_break else loss

    return loss_fn


@pytest.mark.parametrize(
    "kwargs, call_to_break",
    # loss calls per update: clean, perturbed; with m=6 on 12 examples: clean 1, perturbed 1, clean 2, perturbed 2
    [({}, 1), ({}, 2), ({"m": 6}, 1), ({"m": 6}, 2), ({"m": 6}, 3), ({"m": 6}, 4), ({"micro_batch": 5}, 2)],
)
def test_inf_in_either_pass_skips_the_whole_update_and_backs_the_scale_off_once(call_to_break, kwargs):
    model = net(bn=True)
    opt, grad_scaler = sam(model), scaler(growth_interval=1)  # every good update would double the scale
    (x, y), (x2, y2) = data(2)
    sam_update(model, F.cross_entropy, x, y, opt, scaler=grad_scaler, **kwargs)  # momentum buffers now exist
    assert grad_scaler.get_scale() == 2.0**15
    before = snapshot(model, opt)
    sam_update(model, overflowing(call_to_break), x2, y2, opt, scaler=grad_scaler, **kwargs)
    # Weights (never left at w + ε), BatchNorm statistics and momentum buffers are exactly as before.
    assert_same(before[0], model.state_dict())
    assert_same(before[1], snapshot(model, opt)[1])
    assert grad_scaler.get_scale() == 2.0**14  # one back-off (×0.5), not two
    assert all(p.grad is None for p in model.parameters())
    sam_update(model, F.cross_entropy, x2, y2, opt, scaler=grad_scaler, **kwargs)  # usable again
    assert grad_scaler.get_scale() == 2.0**15
    assert not torch.equal(before[0]["0.weight"], model[0].weight)


def test_real_fp32_overflow_backs_off_until_the_update_equals_the_unscaled_one():
    """Scale 2^127 on a loss of ~20 overflows float32 for real; each overflow halves it; then the update goes through."""
    (x, y), = data(1)
    plain, scaled = net(), net()
    opt_plain, opt_scaled = sam(plain), sam(scaled)
    grad_scaler = scaler(2.0**127)
    loss_fn = lambda out, target: 16 * F.cross_entropy(out, target)  # noqa: E731
    start = copy.deepcopy(scaled.state_dict())
    skipped = 0
    while True:
        scale = grad_scaler.get_scale()
        sam_update(scaled, loss_fn, x, y, opt_scaled, scaler=grad_scaler)
        if grad_scaler.get_scale() == scale:
            break
        assert grad_scaler.get_scale() == scale / 2
        assert_same(start, scaled.state_dict())
        assert len(opt_scaled.base_optimizer.state) == 0  # no momentum buffer was created by a skipped update
        skipped += 1
    assert 2 <= skipped <= 10
    sam_update(plain, loss_fn, x, y, opt_plain)
    assert_same(plain.state_dict(), scaled.state_dict())


def test_scaler_is_updated_once_per_update_even_with_chunks_and_accumulation():
    model = net()
    opt, grad_scaler = sam(model), scaler(8.0, growth_interval=2)
    for x, y in data(4):
        sam_update(model, F.cross_entropy, x, y, opt, m=3, micro_batch=2, scaler=grad_scaler)
    assert grad_scaler.get_scale() == 32.0  # 4 updates, growth every 2 → 8 · 2 · 2


def manual_amp_step(model, opt, grad_scaler, x, y):
    """The documented manual form: scaled clean pass, first_step, scaled perturbed pass, second_step."""
    grad_scaler.scale(F.cross_entropy(model(x), y)).backward()
    opt.first_step(zero_grad=True, scaler=grad_scaler)
    with frozen_bn_stats(model):
        grad_scaler.scale(F.cross_entropy(model(x), y)).backward()
    opt.second_step(zero_grad=True, scaler=grad_scaler)


def test_manual_first_and_second_step_with_a_scaler_match_sam_update():
    a, b = net(bn=True), net(bn=True)
    opt_a, opt_b, scaler_a, scaler_b = sam(a), sam(b), scaler(), scaler()
    for x, y in data(3):
        sam_update(a, F.cross_entropy, x, y, opt_a, scaler=scaler_a)
        manual_amp_step(b, opt_b, scaler_b, x, y)
    assert_same(a.state_dict(), b.state_dict())


def test_manual_form_skips_on_a_clean_overflow():
    model = net()
    opt, grad_scaler = sam(model), scaler(2.0**127)
    start = copy.deepcopy(model.state_dict())
    (x, y), = data(1)
    grad_scaler.scale(16 * F.cross_entropy(model(x), y)).backward()  # 16 × loss × 2^127 overflows float32
    assert opt.first_step(zero_grad=True, scaler=grad_scaler) is False
    assert_same(start, model.state_dict())  # not perturbed
    grad_scaler.scale(F.cross_entropy(model(x), y)).backward()  # the caller need not branch
    opt.second_step(zero_grad=True, scaler=grad_scaler)
    assert_same(start, model.state_dict())
    assert grad_scaler.get_scale() == 2.0**126 and len(opt.base_optimizer.state) == 0


def test_bf16_autocast_on_cpu_without_a_scaler():
    """Under CPU bf16 autocast sam_update equals the hand-written two-pass step under the same autocast, keeps the
    weights in float32 and stays close to the float32 step."""
    x, y = data(1, n=64)[0]
    low, manual, full = net(bn=True), net(bn=True), net(bn=True)
    opt_low, opt_manual, opt_full = sam(low), sam(manual), sam(full)
    start = copy.deepcopy(low.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, out = sam_update(low, F.cross_entropy, x, y, opt_low)
        assert out.dtype == torch.bfloat16
        F.cross_entropy(manual(x), y).backward()
        opt_manual.first_step(zero_grad=True)
        with frozen_bn_stats(manual):
            F.cross_entropy(manual(x), y).backward()
        opt_manual.second_step()
    assert_same(low.state_dict(), manual.state_dict())
    assert all(p.dtype == torch.float32 for p in low.parameters())
    sam_update(full, F.cross_entropy, x, y, opt_full)
    for name, p in low.named_parameters():
        step_bf16, step_fp32 = (p.detach() - start[name]).flatten(), (full.state_dict()[name] - start[name]).flatten()
        assert F.cosine_similarity(step_bf16, step_fp32, dim=0) > 0.95, name
