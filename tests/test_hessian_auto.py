"""The "auto" HVP mode: which product it picks, that the pick is exact (explicit Hessians from torch.func.hessian of
hand-written functions), the graph-memory estimate behind the cache decision, and the fall-back when a model has no
double backward."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from samscale.hessian import HessianOperator, analyze
from samscale.hessian.objective import Objective

DT = torch.float64


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(DT)


def data(n: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=DT), torch.randint(0, 3, (n,), generator=g)


def explicit_hessian(model: nn.Module, x, y) -> torch.Tensor:
    shapes = [p.shape for p in model.parameters()]
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat):
        w1, b1, w2, b2 = (t.view(s) for t, s in zip(torch.split(flat, [s.numel() for s in shapes]), shapes))
        return F.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y)

    return torch.func.hessian(loss)(w)


def test_auto_caches_the_graphs_when_they_fit_and_is_exact():
    model, (x, y) = tiny_mlp(), data()
    op = HessianOperator(model, F.cross_entropy, [(x[:5], y[:5]), (x[5:], y[5:])])
    assert op.hvp_mode == "auto"
    torch.testing.assert_close(op.to_dense(), explicit_hessian(model, x, y), rtol=1e-10, atol=1e-12)
    assert op.mode_used == "double_backward+cache"
    assert op.fallback_reason is None


def test_auto_without_room_for_the_cache_recomputes_the_graph_per_product():
    model, (x, y) = tiny_mlp(), data()
    op = HessianOperator(model, F.cross_entropy, (x, y), cache_bytes=0)
    assert op.mode_used == "double_backward"
    torch.testing.assert_close(op.to_dense(), explicit_hessian(model, x, y), rtol=1e-10, atol=1e-12)
    forced = HessianOperator(model, F.cross_entropy, (x, y), cache=False)
    assert forced.mode_used == "double_backward"
    explicit = HessianOperator(model, F.cross_entropy, (x, y), hvp_mode="fwd_rev")
    assert explicit.mode_used == "fwd_rev"


def test_graph_memory_estimate_counts_the_saved_activations_and_scales_with_examples():
    model = tiny_mlp()
    n_params_bytes = sum(p.numel() for p in model.parameters()) * 8
    sizes = {}
    for n in (64, 128):
        x, y = data(n)
        cached = Objective(model, F.cross_entropy, (x, y)).cached_hvp()
        sizes[n] = cached.nbytes
        assert cached.nbytes >= n * (4 + 5) * 8  # at least the input and the hidden activations (float64)
    # doubling the examples doubles everything but the parameters (which are counted once per graph)
    assert sizes[128] - sizes[64] == pytest.approx(sizes[64], abs=2 * n_params_bytes)
    x, y = data(128)
    objective = Objective(model, F.cross_entropy, [(x[:64], y[:64]), (x[64:], y[64:])])
    assert objective.cached_hvp(max_bytes=sizes[64] * 2 - 1) is None  # first batch's 64 examples × 2 > the limit
    assert objective.cached_hvp(max_bytes=sizes[64] * 2).nbytes == pytest.approx(2 * sizes[64], rel=0.05)


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_auto_with_batchnorm_matches_forward_over_reverse(bn_mode):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).to(DT)
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    x, y = data(16, seed=4)
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    auto = HessianOperator(model, F.cross_entropy, batches, bn_mode=bn_mode)
    reference = HessianOperator(model, F.cross_entropy, batches, bn_mode=bn_mode, hvp_mode="fwd_rev")
    torch.testing.assert_close(auto.to_dense(), reference.to_dense(), rtol=1e-9, atol=1e-11)
    assert auto.mode_used == "double_backward+cache" and auto.fallback_reason is None
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


class OnceDifferentiableCube(torch.autograd.Function):
    """x ↦ x³ with a backward that cannot itself be differentiated (as some fused kernels' backward passes)."""

    @staticmethod
    def forward(x):
        return x**3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad_output

    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        return 3 * x**2 * tangent


class CubeModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.linear = nn.Linear(3, 2).to(DT)

    def forward(self, x):
        return OnceDifferentiableCube.apply(self.linear(x))


def cube_hessian(model: CubeModel, x, loss) -> torch.Tensor:
    w, b = model.linear.weight.detach(), model.linear.bias.detach()

    def f(flat):
        return loss((x @ flat[:6].view(2, 3).T + flat[6:]) ** 3)

    return torch.func.hessian(f)(torch.cat([w.reshape(-1), b]))


@pytest.mark.parametrize(
    "loss, failure",
    [
        (lambda out: (out**2).mean(), "disagreed"),  # grad_output depends on w: double backward drops a term
        (lambda out: out.mean(), "disagreed"),  # constant grad_output: the gradient leaves the graph (zero product)
    ],
    ids=["partial", "detached"],
)
def test_auto_falls_back_to_reverse_over_forward_without_double_backward(loss, failure):
    model = CubeModel()
    x = torch.randn(7, 3, dtype=DT, generator=torch.Generator().manual_seed(6))
    batch = (x, torch.zeros(7))
    loss_fn = lambda out, _y: loss(out)  # noqa: E731
    exact = cube_hessian(model, x, loss)
    auto = HessianOperator(model, loss_fn, batch)
    torch.testing.assert_close(auto.to_dense(), exact, rtol=1e-10, atol=1e-12)
    assert auto.mode_used == "rev_fwd"
    assert failure in auto.fallback_reason
    assert auto.objective.custom_functions() == ["OnceDifferentiableCube"]
    forced = HessianOperator(model, loss_fn, batch, hvp_mode="double_backward")
    assert float((forced.to_dense() - exact).abs().max()) > 1e-3 * float(exact.abs().max())  # what auto avoided


def test_analyze_records_the_product_it_used():
    model, (x, y) = tiny_mlp(), data()
    report = analyze(model, F.cross_entropy, (x, y), what=("lambda_max",))
    assert report["hvp_mode"] == "double_backward+cache"
    pinned = analyze(model, F.cross_entropy, (x, y), what=("lambda_max",), hvp_mode="rev_fwd")
    assert pinned["hvp_mode"] == "rev_fwd"
    assert pinned["lambda_max"]["value"] == pytest.approx(report["lambda_max"]["value"], rel=1e-8)


def test_reverse_over_forward_is_refused_with_batch_statistics():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)).to(DT)
    with pytest.raises(ValueError, match="rev_fwd.*bn_mode='train'"):
        HessianOperator(model, F.cross_entropy, data(), bn_mode="train", hvp_mode="rev_fwd")
    HessianOperator(model, F.cross_entropy, data(), bn_mode="eval", hvp_mode="rev_fwd")  # running statistics: fine


def test_bad_cache_settings_are_named():
    model, batch = tiny_mlp(), data()
    with pytest.raises(ValueError, match="cache_bytes.*-1"):
        HessianOperator(model, F.cross_entropy, batch, cache_bytes=-1)
    with pytest.raises(ValueError, match="hvp_mode must be one of.*'auto'.*got 'fast'"):
        HessianOperator(model, F.cross_entropy, batch, hvp_mode="fast")
