"""Model constructors: Flax initialization statistics, forward passes against hand computations, shapes, determinism."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from samscale.models import flax_init_, linear, mlp, resnet, resnet18, resnet50, two_layer, vit
from samscale.models.init import lecun_truncated_normal_
from samscale.models.resnet import Bottleneck
from samscale.models.vit import SelfAttention

TRUNCATED_STD = 0.87962566103423978


def _sigma(fan_in):
    return math.sqrt(1.0 / fan_in) / TRUNCATED_STD


def test_truncated_std_constant_is_the_std_of_a_standard_normal_truncated_at_two():
    phi2 = math.exp(-2.0) / math.sqrt(2 * math.pi)  # density at 2
    mass = math.erf(2 / math.sqrt(2))  # P(|z| < 2)
    assert math.sqrt(1 - 2 * 2 * phi2 / mass) == pytest.approx(TRUNCATED_STD, rel=1e-12)


@pytest.mark.parametrize("layer, fan_in", [(nn.Linear(400, 500), 400), (nn.Conv2d(64, 64, 3), 576)])
def test_kernels_are_lecun_normal_truncated_at_two_sigma(layer, fan_in):
    torch.manual_seed(0)
    flax_init_(layer)
    w = layer.weight.detach().double()
    bound = 2 * _sigma(fan_in)
    assert w.abs().max() <= bound + 1e-7
    assert w.abs().max() >= 0.98 * bound  # the tails are truncated at 2σ, not earlier
    assert w.std().item() == pytest.approx(math.sqrt(1.0 / fan_in), rel=0.02)
    assert abs(w.mean().item()) < 3 * math.sqrt(1.0 / fan_in) / math.sqrt(w.numel())
    assert torch.count_nonzero(layer.bias) == 0


def test_grouped_conv_fan_in_counts_channels_per_group():
    conv = nn.Conv2d(64, 64, 3, groups=4, bias=False)
    lecun_truncated_normal_(conv.weight, torch.Generator().manual_seed(1))
    assert conv.weight.abs().max() <= 2 * _sigma(16 * 9) + 1e-7
    assert conv.weight.std().item() == pytest.approx(math.sqrt(1.0 / 144), rel=0.03)


def test_resnet18_init_and_batchnorm_conventions():
    torch.manual_seed(0)
    model = resnet18(filters=8)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 1 + 16 + 3  # stem, two per block, three projection shortcuts
    for bn in bns:
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
        assert bn.momentum == 0.1 and bn.eps == 1e-5
        assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 16 + 3 and all(c.bias is None for c in convs)
    assert torch.all(model.head.bias == 0)
    assert model.stem[0].weight.abs().max() <= 2 * _sigma(27) + 1e-7


def test_resnet50_zeroes_only_the_last_bn_scale_of_each_bottleneck():
    model = resnet50(filters=4, num_classes=5)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 3 + 4 + 6 + 3
    for block in blocks:
        assert torch.all(block.bn3.weight == 0)
        assert torch.all(block.bn1.weight == 1) and torch.all(block.bn2.weight == 1)
    assert torch.all(model.stem[1].weight == 1)
    assert model.stem[0].kernel_size == (7, 7) and isinstance(model.stem[3], nn.MaxPool2d)


def test_identity_bottleneck_starts_as_relu_of_its_input():
    torch.manual_seed(0)
    block = flax_init_(Bottleneck(in_channels=16, width=4)).double()
    x = torch.randn(2, 16, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(block(x), F.relu(x), rtol=0, atol=0)


def test_vit_embeddings_and_norm_init():
    torch.manual_seed(0)
    model = vit(width=64, depth=2, heads=4)
    assert model.pos_embedding.shape == (1, 65, 64)
    assert model.pos_embedding.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.all(model.cls_token == 0)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 5 and all(torch.all(n.weight == 1) and torch.all(n.bias == 0) for n in norms)
    assert model.blocks[0].attn.qkv.weight.abs().max() <= 2 * _sigma(64) + 1e-7
    assert model.patch_embed.proj.weight.abs().max() <= 2 * _sigma(3 * 16) + 1e-7


def test_mlp_forward_matches_hand_computation():
    torch.manual_seed(0)
    model = mlp(hidden=(6, 4), in_features=12, num_classes=3).double()
    for layer in (*model.hidden, model.head):
        nn.init.normal_(layer.bias)  # non-zero biases so they are exercised
    x = torch.randn(5, 1, 3, 4, dtype=torch.float64)
    h = x.reshape(5, 12)
    for layer in model.hidden:
        h = torch.clamp(h @ layer.weight.T + layer.bias, min=0)
    torch.testing.assert_close(model(x), h @ model.head.weight.T + model.head.bias)


def test_two_layer_forward_matches_hand_computation():
    torch.manual_seed(0)
    model = two_layer(7, 3, out_features=2, activation="tanh").double()
    nn.init.normal_(model.hidden.bias)
    x = torch.randn(4, 3, dtype=torch.float64)
    expected = torch.tanh(x @ model.hidden.weight.T + model.hidden.bias) @ model.output.weight.T + model.output.bias
    torch.testing.assert_close(model(x), expected)
    assert two_layer(5, 2, bias=False).hidden.bias is None


def test_self_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = flax_init_(SelfAttention(width=8, heads=2)).double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).split(8, dim=-1)
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        weights = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / 2.0, dim=-1)  # sqrt(head_dim = 4)
        heads.append(weights @ v[..., sl])
    expected = torch.cat(heads, dim=-1) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(x), expected)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_cifar_resnet_ends_on_a_4x4_map_for_mnist_and_cifar_shapes(shape):
    model = resnet18(filters=4, in_channels=shape[0], num_classes=7)
    x = torch.randn(2, *shape)
    assert model.stages(model.stem(x)).shape == (2, 32, 4, 4)
    assert model(x).shape == (2, 7)


def test_output_shapes_of_every_family():
    assert mlp((8,), in_features=784)(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert mlp((), in_features=5, num_classes=2)(torch.randn(3, 5)).shape == (3, 2)
    for depth in (10, 34):
        assert resnet(depth, filters=2)(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert resnet50(filters=4, num_classes=6)(torch.randn(2, 3, 64, 64)).shape == (2, 6)
    assert vit(width=16, depth=1, heads=2)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert vit(width=16, depth=1, heads=2, pool="mean", image_size=(28, 16), in_channels=1)(
        torch.randn(2, 1, 28, 16)
    ).shape == (2, 10)
    assert two_layer(10, 1)(torch.randn(9, 1)).shape == (9, 1)
    assert linear(6, 2)(torch.randn(4, 2, 3)).shape == (4, 2)


@pytest.mark.parametrize(
    "build",
    [lambda g: mlp((16, 8), in_features=20, generator=g), lambda g: resnet18(4, generator=g),
     lambda g: vit(16, depth=1, heads=1, generator=g), lambda g: two_layer(5, 3, generator=g)],
)
def test_same_seed_gives_identical_weights(build):
    torch.manual_seed(3)
    a = build(None)
    torch.manual_seed(3)
    b = build(None)
    c = build(torch.Generator().manual_seed(3))
    d = build(torch.Generator().manual_seed(3))
    e = build(torch.Generator().manual_seed(4))
    for x, y, z, u, v in zip(*(m.state_dict().values() for m in (a, b, c, d, e))):
        assert torch.equal(x, y) and torch.equal(z, u)
    assert not all(torch.equal(x, y) for x, y in zip(c.parameters(), e.parameters()))


def test_bad_arguments_name_the_value_and_the_valid_choices():
    with pytest.raises(ValueError, match=r"hidden\[1\].*got 0"):
        mlp((10, 0))
    with pytest.raises(ValueError, match=r"depth 19.*\[10, 18, 34\]"):
        resnet(19)
    with pytest.raises(ValueError, match="filters.*got -4"):
        resnet18(-4)
    with pytest.raises(ValueError, match="width 30 is not divisible by heads 4"):
        vit(30, heads=4)
    with pytest.raises(ValueError, match="divisible by patch_size 4"):
        vit(16, heads=1, image_size=30)
    with pytest.raises(ValueError, match="pool 'max'.*cls, mean"):
        vit(16, heads=1, pool="max")
    with pytest.raises(ValueError, match="activation 'sigmoid'.*relu"):
        two_layer(4, 2, activation="sigmoid")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        lecun_truncated_normal_(torch.zeros(3))
