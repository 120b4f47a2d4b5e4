"""SAM(..., model=...): BatchNorm running statistics untouched by the perturbed pass on every path, with no other
code from the caller; checked against a hand-written loop that wraps the perturbed pass in frozen_bn_stats and
against running statistics computed by hand. float64 throughout, so equality is exact."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.optim import SAM, frozen_bn_stats, sam_update

DT = torch.float64
MOMENTUM = 0.1


def net(seed: int = 0) -> nn.Module:
    """BatchNorm first (its input is the data, so its statistics can be computed by hand), and one deeper."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.BatchNorm1d(6, momentum=MOMENTUM), nn.Linear(6, 16), nn.BatchNorm1d(16, momentum=None), nn.ReLU(),
        nn.Linear(16, 3),
    ).to(DT)


def batches(steps: int, size: int = 12, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 6, generator=gen, dtype=DT) * 2 + 1, torch.randint(0, 3, (size,), generator=gen))
            for _ in range(steps)]


def sam(model: nn.Module, with_model: bool = True) -> SAM:
    return SAM(model.parameters(), torch.optim.SGD, rho=0.3, lr=0.1, momentum=0.9, weight_decay=1e-3,
               model=model if with_model else None)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def reference_step(model: nn.Module, opt: SAM, x: torch.Tensor, y: torch.Tensor) -> None:
    """The update written out by hand, with the perturbed pass frozen explicitly (SAM built without a model)."""
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.first_step(zero_grad=True)
    with frozen_bn_stats(model):
        F.cross_entropy(model(x), y).backward()
    opt.second_step(zero_grad=True)


def hand_running_stats(xs: list[torch.Tensor], momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Running mean and unbiased variance of the first BatchNorm after one update per batch, from the data alone."""
    mean, var = torch.zeros(6, dtype=DT), torch.ones(6, dtype=DT)
    for x in xs:
        mean = (1 - momentum) * mean + momentum * x.mean(0)
        var = (1 - momentum) * var + momentum * x.var(0, unbiased=True)
    return mean, var


def test_step_with_a_closure_guards_batchnorm_with_no_user_code():
    data = batches(6)
    guarded, reference, unguarded = net(), net(), net()
    opt_g, opt_r, opt_u = sam(guarded), sam(reference, with_model=False), sam(unguarded, with_model=False)
    for x, y in data:
        def closure(model=guarded, x=x, y=y):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt_g.step(closure)
        reference_step(reference, opt_r, x, y)
        opt_u.step(lambda x=x, y=y: F.cross_entropy(unguarded(x), y).backward())
    assert_same(guarded, reference)
    mean, var = hand_running_stats([x for x, _ in data], MOMENTUM)
    torch.testing.assert_close(guarded[0].running_mean, mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(guarded[0].running_var, var, rtol=0, atol=1e-12)
    assert guarded[0].num_batches_tracked.item() == guarded[2].num_batches_tracked.item() == len(data)
    assert all(m.track_running_stats for m in guarded.modules() if isinstance(m, nn.BatchNorm1d))
    # without a model the closure's second call counts as a batch: two updates per step (behaviour as documented)
    assert unguarded[0].num_batches_tracked.item() == 2 * len(data)
    assert (unguarded[2].running_var - reference[2].running_var).abs().max() > 1e-3


def test_first_and_second_step_guard_batchnorm_and_release_it():
    data = batches(4, seed=1)
    guarded, reference = net(), net()
    opt_g, opt_r = sam(guarded), sam(reference, with_model=False)
    for x, y in data:
        F.cross_entropy(guarded(x), y).backward()
        opt_g.first_step(zero_grad=True)
        assert not any(m.track_running_stats for m in guarded.modules() if isinstance(m, nn.BatchNorm1d))
        F.cross_entropy(guarded(x), y).backward()
        guarded(x * 5)  # any further forward pass at w + ε is not counted either
        opt_g.second_step(zero_grad=True)
        assert all(m.track_running_stats for m in guarded.modules() if isinstance(m, nn.BatchNorm1d))
        reference_step(reference, opt_r, x, y)
    assert_same(guarded, reference)


def test_micro_batches_accumulated_by_hand():
    data = batches(3, size=16, seed=2)
    guarded, reference = net(), net()
    opt_g, opt_r = sam(guarded), sam(reference, with_model=False)
    for x, y in data:
        pieces = [(x[:10], y[:10]), (x[10:], y[10:])]
        for model, opt, freeze in ((guarded, opt_g, False), (reference, opt_r, True)):
            for px, py in pieces:
                (F.cross_entropy(model(px), py) * len(px) / len(x)).backward()
            opt.first_step(zero_grad=True)
            for px, py in pieces:
                if freeze:
                    with frozen_bn_stats(model):
                        (F.cross_entropy(model(px), py) * len(px) / len(x)).backward()
                else:
                    (F.cross_entropy(model(px), py) * len(px) / len(x)).backward()
            opt.second_step(zero_grad=True)
    assert_same(guarded, reference)
    assert guarded[0].num_batches_tracked.item() == 2 * len(data)  # two clean passes per step, none perturbed


@pytest.mark.parametrize("kwargs", [{}, {"micro_batch": 5}, {"m": 6}, {"m": 8, "micro_batch": 4}])
def test_sam_update_gives_the_same_update_with_or_without_a_model(kwargs):
    data = batches(3, size=16, seed=3)
    with_model, without = net(), net()
    opt_w, opt_o = sam(with_model), sam(without, with_model=False)
    for x, y in data:
        loss_w, out_w = sam_update(with_model, F.cross_entropy, x, y, opt_w, **kwargs)
        loss_o, out_o = sam_update(without, F.cross_entropy, x, y, opt_o, **kwargs)
        assert torch.equal(loss_w, loss_o) and torch.equal(out_w, out_o)
    assert_same(with_model, without)
    if not kwargs:  # one clean pass per step: the first layer's statistics follow the data
        mean, var = hand_running_stats([x for x, _ in data], MOMENTUM)
        torch.testing.assert_close(with_model[0].running_mean, mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(with_model[0].running_var, var, rtol=0, atol=1e-12)


def test_grad_scaler_path_by_hand_equals_sam_update_and_a_skipped_update_leaves_statistics_alone():
    data = batches(4, seed=4)
    guarded, reference = net(), net()
    opt_g, opt_r = sam(guarded), sam(reference, with_model=False)
    scaler_g = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler_r = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for x, y in data:
        scaler_g.scale(F.cross_entropy(guarded(x), y)).backward()
        assert opt_g.first_step(zero_grad=True, scaler=scaler_g)
        scaler_g.scale(F.cross_entropy(guarded(x), y)).backward()
        opt_g.second_step(zero_grad=True, scaler=scaler_g)
        sam_update(reference, F.cross_entropy, x, y, opt_r, scaler=scaler_r)
    assert_same(guarded, reference)
    assert scaler_g.get_scale() == scaler_r.get_scale()

    # an overflowing clean gradient: the update is skipped, and the second pass (at w) must not count either
    x, y = data[0]
    scaler_g.scale(F.cross_entropy(guarded(x), y)).backward()
    before = state(guarded)
    guarded[1].weight.grad[0, 0] = float("inf")
    assert not opt_g.first_step(zero_grad=True, scaler=scaler_g)
    scaler_g.scale(F.cross_entropy(guarded(x), y)).backward()
    opt_g.second_step(zero_grad=True, scaler=scaler_g)
    for key, value in state(guarded).items():
        assert torch.equal(value, before[key]), key
    assert scaler_g.get_scale() == scaler_r.get_scale() / 2
    assert all(m.track_running_stats for m in guarded.modules() if isinstance(m, nn.BatchNorm1d))


def test_a_failing_perturbed_call_restores_weights_and_releases_batchnorm():
    model = net()
    opt = sam(model)
    x, y = batches(1)[0]
    before = state(model)
    calls = []

    def closure():
        calls.append(1)
        loss = F.cross_entropy(model(x), y)
        if len(calls) == 2:
            raise FloatingPointError("loss is nan")
        loss.backward()
        return loss

    with pytest.raises(FloatingPointError):
        opt.step(closure)
    for key in ("1.weight", "4.bias"):
        assert torch.equal(model.state_dict()[key], before[key])
    assert model[0].num_batches_tracked.item() == 1  # the clean call only
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    with pytest.raises(ValueError, match="needs a closure"):
        opt.step()  # the failed update left no SAM gradient to step with


def test_step_without_a_closure_finishes_an_update_begun_by_first_step():
    data = batches(3, seed=5)
    a, b, c = net(), net(), net()
    opt_a, opt_b, opt_c = sam(a), sam(b), sam(c)
    for x, y in data:
        for model, opt in ((a, opt_a), (b, opt_b), (c, opt_c)):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.first_step(zero_grad=True)
            F.cross_entropy(model(x), y).backward()
        opt_a.second_step()
        opt_b.step()  # still at w + ε: the same as second_step()
        opt_c.restore()
        opt_c.step()  # already restored: the base step on the SAM gradient
    assert_same(a, b)
    assert_same(a, c)
    with pytest.raises(ValueError, match="needs a closure"):
        opt_a.step()  # nothing pending: no silent plain base-optimizer step


def test_model_must_be_a_module():
    w = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="model must be the torch.nn.Module being trained"):
        SAM([w], torch.optim.SGD, lr=0.1, model="resnet")

