"""Pruning at initialization: exact kept counts, SNIP against a hand argsort, masks enforced through training."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.models import mlp, resnet18, vit
from samscale.sparsity import (
    MaskEnforcer,
    apply_masks,
    density,
    layer_densities,
    make_masks,
    prunable_parameters,
    snip_scores,
)


def small_mlp(seed=0):
    return mlp((30, 20), in_features=50, num_classes=10, generator=torch.Generator().manual_seed(seed)).double()


def batch(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 50, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def test_prunable_parameters_are_linear_and_conv_kernels_only():
    assert list(prunable_parameters(small_mlp())) == ["hidden.0.weight", "hidden.1.weight", "head.weight"]
    names = set(prunable_parameters(vit(16, depth=1, heads=1)))
    assert names == {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
                     "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight", "head.weight"}
    conv_names = set(prunable_parameters(resnet18(2)))
    assert len(conv_names) == 1 + 16 + 3 + 1 and not any("bn" in n or "bias" in n for n in conv_names)


@pytest.mark.parametrize("sparsity", [0.37, 0.5, 0.9, 0.99])
def test_random_masks_keep_exactly_round_of_each_layer(sparsity):
    model = small_mlp()
    masks = make_masks(model, "random", sparsity, generator=torch.Generator().manual_seed(1))
    biases = [layer.bias.clone() for layer in (*model.hidden, model.head)]
    apply_masks(model, masks)
    sizes = {"hidden.0.weight": 1500, "hidden.1.weight": 600, "head.weight": 200}
    for name, n in sizes.items():
        kept = round((1 - sparsity) * n)
        assert masks[name].dtype == torch.bool and int(masks[name].sum()) == kept
        assert layer_densities(model, masks)[name] == kept / n
    assert density(model, masks) == sum(round((1 - sparsity) * n) for n in sizes.values()) / 2300
    for before, layer in zip(biases, (*model.hidden, model.head)):
        assert torch.equal(before, layer.bias)


def test_random_masks_are_reproducible_and_depend_on_the_generator():
    model = small_mlp()
    a = make_masks(model, "random", 0.5, generator=torch.Generator().manual_seed(7))
    b = make_masks(model, "random", 0.5, generator=torch.Generator().manual_seed(7))
    c = make_masks(model, "random", 0.5, generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("method", ["random", "snip"])
def test_zero_sparsity_prunes_nothing(method):
    model = small_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = make_masks(model, method, 0.0, batch=batch())
    assert all(bool(m.all()) for m in masks.values())
    apply_masks(model, masks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert density(model, masks) == 1.0


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.95])
def test_snip_keeps_the_global_top_weights_by_hand_argsort(sparsity):
    model = small_mlp()
    x, y = batch()
    masks = make_masks(model, "snip", sparsity, batch=(x, y))
    # oracle: plain backward, |w * grad| over every kernel, one global descending argsort
    F.cross_entropy(model(x), y).backward()
    kernels = [model.hidden[0].weight, model.hidden[1].weight, model.head.weight]
    scores = torch.cat([(w * w.grad).abs().flatten() for w in kernels])
    kept = round((1 - sparsity) * scores.numel())
    expected = torch.zeros(scores.numel(), dtype=torch.bool)
    expected[torch.argsort(scores, descending=True)[:kept]] = True
    got = torch.cat([masks[n].flatten() for n in ("hidden.0.weight", "hidden.1.weight", "head.weight")])
    assert torch.equal(got, expected)
    assert int(got.sum()) == kept
    per_layer = [int(masks[n].sum()) for n in masks]
    assert len(set(per_layer)) > 1  # global selection: layers keep different fractions


def test_snip_with_custom_loss_and_untouched_batchnorm_state():
    torch.manual_seed(0)
    model = resnet18(2, num_classes=3).double().eval()
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    mse = lambda out, target: ((out - F.one_hot(target, 3).double()) ** 2).mean()  # noqa: E731
    scores = snip_scores(model, (x, y), mse)
    assert not model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # oracle: the same loss in train mode on a copy
    twin = resnet18(2, num_classes=3).double()
    twin.load_state_dict(state)
    mse(twin.train()(x), y).backward()
    for name, weight in prunable_parameters(twin).items():
        torch.testing.assert_close(scores[name], (weight * weight.grad).abs())


def _train(model, masks, steps=5, attach=True, use_enforcer=True):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-3)
    enforcer = MaskEnforcer(model, masks) if use_enforcer else None
    if enforcer and attach:
        enforcer.attach(opt)
    if not use_enforcer:
        apply_masks(model, masks)
    for step in range(steps):
        x, y = batch(step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return enforcer


@pytest.mark.parametrize("attach", [True, False])
def test_pruned_weights_stay_exactly_zero_under_momentum_and_weight_decay(attach):
    model = small_mlp()
    masks = make_masks(model, "random", 0.8, generator=torch.Generator().manual_seed(0))
    start = {k: v.clone() for k, v in prunable_parameters(model).items()}
    _train(model, masks, attach=attach)
    for name, weight in prunable_parameters(model).items():
        assert torch.count_nonzero(weight[~masks[name]]) == 0
        assert torch.all(weight[masks[name]] != start[name][masks[name]])  # the kept weights did train
    assert density(model, masks) == sum(int(m.sum()) for m in masks.values()) / 2300


def test_attached_enforcer_rezeroes_weights_written_outside_the_gradient_path():
    model = small_mlp()
    masks = make_masks(model, "random", 0.5, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    MaskEnforcer(model, masks).attach(opt)
    with torch.no_grad():
        model.hidden[0].weight.fill_(1.0)  # e.g. a checkpoint load or a buggy perturbation
    assert density(model, masks) > 0.5
    opt.step()  # no gradients at all: only the post-step hook can restore the zeros
    assert layer_densities(model, masks)["hidden.0.weight"] == int(masks["hidden.0.weight"].sum()) / 1500


def test_without_enforcement_pruned_weights_drift():
    model = small_mlp()
    masks = make_masks(model, "random", 0.8, generator=torch.Generator().manual_seed(0))
    _train(model, masks, use_enforcer=False)
    assert density(model, masks) > 0.9


def test_sam_style_perturbation_never_moves_pruned_weights():
    model = small_mlp()
    masks = make_masks(model, "snip", 0.7, batch=batch())
    with MaskEnforcer(model, masks):
        x, y = batch(3)
        F.cross_entropy(model(x), y).backward()
        grads = [p.grad for p in prunable_parameters(model).values()]
        for g, mask in zip(grads, masks.values()):
            assert torch.count_nonzero(g[~mask]) == 0
        norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters()))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * p.grad / norm)  # the ascent step w + ε
        assert density(model, masks) == sum(int(m.sum()) for m in masks.values()) / 2300


def test_remove_takes_the_gradient_hooks_off():
    model = small_mlp()
    masks = make_masks(model, "random", 0.5, generator=torch.Generator().manual_seed(0))
    enforcer = MaskEnforcer(model, masks)
    enforcer.remove()
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    assert torch.count_nonzero(model.hidden[0].weight.grad[~masks["hidden.0.weight"]]) > 0


def test_bad_input_is_rejected_with_the_valid_range():
    model = small_mlp()
    for bad in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match=r"sparsity must be a number in \[0, 1\)"):
            make_masks(model, "random", bad)
    with pytest.raises(ValueError, match="unknown pruning method 'magnitude'; valid: random, snip"):
        make_masks(model, "magnitude", 0.5)
    with pytest.raises(ValueError, match="needs batch"):
        make_masks(model, "snip", 0.5)
    with pytest.raises(ValueError, match="no Linear or convolution weights"):
        make_masks(nn.BatchNorm1d(3), "random", 0.5)
    with pytest.raises(KeyError, match="unknown parameter 'fc.weight'; prunable: hidden.0.weight"):
        apply_masks(model, {"fc.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"shape \(2, 2\), parameter has \(30, 50\)"):
        apply_masks(model, {"hidden.0.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(TypeError, match="register_step_post_hook"):
        MaskEnforcer(model, {}).attach(object())
