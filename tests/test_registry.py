"""Registry: paper ladders, closed-form parameter counts against hand-derived polynomials and built models."""
import pytest
import torch

from samscale.models import FAMILIES, LADDERS, UnknownFamilyError, build_model, count_params, describe_ladder
from samscale.models import param_count


# Hand-derived closed forms (expanded by hand from docs/PROTOCOL.md §3, independent of the library's block-by-block sums).
def mlp_hand(h1, h2, d=784, c=10):
    return d * h1 + h1 + h1 * h2 + h2 + h2 * c + c


def resnet18_hand(nf, channels=3, classes=10):
    # conv kernels: stage 1: 36 nf², stage 2: 128 nf², stage 3: 512 nf², stage 4: 2048 nf² (incl. 1×1 shortcuts);
    # BN (γ, β): 148 nf in the stages + 2 nf in the stem; stem conv 9·C·nf; head 8nf·classes + classes.
    return 2724 * nf**2 + (150 + 9 * channels + 8 * classes) * nf + classes


def resnet_depth_hand(depth, nf, channels=3, classes=10):
    quadratic, linear = {10: (1194, 88), 18: (2724, 148), 34: (5190, 264)}[depth]
    return quadratic * nf**2 + (linear + 2 + 9 * channels + 8 * classes) * nf + classes


def resnet50_hand(f, channels=3, classes=1000):
    # bottleneck kernels per stage: 52, 296, 1728, 3648 f²; BN 44 + 112 + 320 + 352 = 828 f;
    # stem 7×7 conv 49·C·f + BN 2f; head 32f·classes + classes.
    return 5724 * f**2 + (830 + 49 * channels + 32 * classes) * f + classes


def vit_hand(d, depth=6, ratio=2, patch=4, channels=3, image=32, classes=10):
    tokens = (image // patch) ** 2 + 1
    per_block = (4 + 2 * ratio) * d**2 + (9 + ratio) * d
    return depth * per_block + d * (patch * patch * channels + 1 + 1 + tokens + 2 + classes) + classes


def test_anchor_counts():
    assert mlp_hand(300, 100) == 266_610
    assert resnet18_hand(64) == 11_173_962
    assert resnet50_hand(64) == 25_557_032  # torchvision's ResNet-50
    assert resnet_depth_hand(34, 64) == 21_282_122  # the usual CIFAR ResNet-34
    assert param_count("mlp", 1) == 266_610
    assert param_count("resnet18", 64) == 11_173_962
    assert param_count("resnet50", 64) == 25_557_032
    assert param_count("vit", 64) == param_count("vit", "m") == vit_hand(64) == 208_970


def test_paper_ladders():
    assert LADDERS["mlp"] == (0.25, 0.5, 1, 4, 10)
    assert LADDERS["resnet18"] == (4, 8, 16, 32, 64, 128, 256)
    assert LADDERS["resnet50"] == (16, 32, 48, 56, 64)
    assert set(LADDERS) == set(FAMILIES) == {"mlp", "resnet18", "resnet50", "resnet", "vit", "two_layer", "gcn", "dqn",
                                             "lstm", "transformer"}
    vit_counts = [param_count("vit", s) for s in LADDERS["vit"]]
    assert vit_counts == sorted(vit_counts) and 1e4 <= vit_counts[0] and vit_counts[-1] <= 1e6
    two_layer_counts = [param_count("two_layer", s) for s in LADDERS["two_layer"]]
    assert 1e4 <= two_layer_counts[0] and two_layer_counts[-1] <= 1.1e5


@pytest.mark.parametrize("k, hidden", [(0.25, (75, 25)), (0.5, (150, 50)), (1, (300, 100)), (4, (1200, 400)),
                                       (10, (3000, 1000))])
def test_mlp_ladder_counts(k, hidden):
    model = build_model("mlp", k)
    assert tuple(layer.out_features for layer in model.hidden) == hidden
    assert count_params(model) == param_count("mlp", k) == mlp_hand(*hidden)


@pytest.mark.parametrize("nf", LADDERS["resnet18"])
def test_resnet18_ladder_counts(nf):
    assert param_count("resnet18", nf) == resnet18_hand(nf)
    assert param_count("resnet18", nf, input_shape=(1, 28, 28)) == resnet18_hand(nf, channels=1)
    if nf <= 64:
        assert count_params(build_model("resnet18", nf)) == resnet18_hand(nf)


@pytest.mark.parametrize("nf", LADDERS["resnet50"])
def test_resnet50_ladder_counts(nf):
    assert param_count("resnet50", nf) == resnet50_hand(nf)
    if nf <= 32:
        assert count_params(build_model("resnet50", nf)) == resnet50_hand(nf)


@pytest.mark.parametrize("depth", LADDERS["resnet"])
def test_resnet_depth_counts(depth):
    assert param_count("resnet", depth) == resnet_depth_hand(depth, 64)
    built = build_model("resnet", depth, filters=4, input_shape=(1, 28, 28), num_classes=5)
    assert count_params(built) == param_count("resnet", depth, filters=4, input_shape=(1, 28, 28), num_classes=5)
    assert count_params(built) == resnet_depth_hand(depth, 4, channels=1, classes=5)


@pytest.mark.parametrize("width", LADDERS["vit"])
def test_vit_ladder_counts(width):
    model = build_model("vit", width)
    assert count_params(model) == param_count("vit", width) == vit_hand(width)
    assert model.blocks[0].attn.heads == max(1, width // 16)


def test_vit_options_change_the_count_as_the_formula_says():
    options = dict(depth=3, mlp_ratio=4, heads=2)
    model = build_model("vit", 32, input_shape=(1, 28, 28), num_classes=7, **options)
    expected = vit_hand(32, depth=3, ratio=4, channels=1, image=28, classes=7)
    assert count_params(model) == param_count("vit", 32, input_shape=(1, 28, 28), num_classes=7, **options) == expected
    mean_pool = param_count("vit", 32, pool="mean")
    assert mean_pool == vit_hand(32) - 2 * 32  # no class token, one position embedding fewer


@pytest.mark.parametrize("width", LADDERS["two_layer"])
def test_two_layer_counts(width):
    assert count_params(build_model("two_layer", width)) == param_count("two_layer", width) == 101 * width + width + 1
    assert param_count("two_layer", width, input_shape=(1,), bias=False) == 2 * width


def test_describe_ladder_rows():
    rows = describe_ladder("resnet50")
    assert [r["size"] for r in rows] == [16, 32, 48, 56, 64]
    assert [r["n_params"] for r in rows] == [resnet50_hand(f) for f in (16, 32, 48, 56, 64)]
    assert describe_ladder("mlp", input_shape=(1, 8, 8), num_classes=3)[2] == {"size": 1, "n_params": mlp_hand(
        300, 100, d=64, c=3)}


def test_count_params_trainable_only():
    model = build_model("two_layer", 4, input_shape=(3,))
    model.hidden.requires_grad_(False)
    assert count_params(model) == 4 + 1
    assert count_params(model, trainable_only=False) == 3 * 4 + 4 + 4 + 1


def test_build_model_is_seeded_by_its_generator():
    a = build_model("mlp", 0.25, generator=torch.Generator().manual_seed(0))
    b = build_model("mlp", 0.25, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_errors_list_the_valid_choices():
    with pytest.raises(UnknownFamilyError, match="unknown model family 'resnet101'; valid: dqn, gcn, lstm, mlp, resnet"):
        build_model("resnet101", 64)
    with pytest.raises(KeyError):
        param_count("rnn", 1)
    with pytest.raises(ValueError, match=r"invalid mlp size -1.*0.25, 0.5, 1, 4, 10"):
        param_count("mlp", -1)
    with pytest.raises(ValueError, match=r"invalid resnet size 50.*10, 18, 34"):
        param_count("resnet", 50)
    with pytest.raises(ValueError, match="invalid resnet18 size 64.5"):
        param_count("resnet18", 64.5)
    with pytest.raises(ValueError, match="invalid vit size 'huge'.*'xl'"):
        param_count("vit", "huge")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['dropout'\].*depth, heads"):
        param_count("vit", 64, dropout=0.1)
    with pytest.raises(ValueError, match=r"input_shape \(channels, height, width\), got \(784,\)"):
        param_count("resnet18", 8, input_shape=(784,))
    with pytest.raises(ValueError, match="rounds hidden widths"):
        param_count("mlp", 0.001)
