"""Checks that need a CUDA device (marked `cuda`, skipped without one; benchmarks/gpu.sh runs them on a GPU):
CUDA results against CPU references computed in the same test."""
import copy

import pytest
import torch
import torch.nn.functional as F

from samscale.data.augment import PadCropFlip
from samscale.data.loader import TensorLoader
from samscale.data.split import Split
from samscale.hessian import HessianOperator, lanczos
from samscale.models import mlp, resnet18
from samscale.optim import SAM, sam_update

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_resident_loader_on_cuda_gives_the_cpu_batches():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 3, 8, 8, generator=g), torch.randint(0, 10, (300,), generator=g)
    batches = {}
    for device in ("cpu", "cuda"):
        split = Split(x.to(device), y.to(device))
        loader = TensorLoader(split, 64, shuffle=True, generator=torch.Generator().manual_seed(1),
                              augment=PadCropFlip(pad=2))
        batches[device] = list(loader)
    for (xc, yc), (xg, yg) in zip(batches["cpu"], batches["cuda"]):
        assert xg.device.type == "cuda"
        torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=0)
        torch.testing.assert_close(yg.cpu(), yc, rtol=0, atol=0)


def test_sam_step_on_cuda_matches_the_cpu_step():
    torch.manual_seed(0)
    model = mlp((32, 16), in_features=20, num_classes=5).double()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(64, 20, generator=g, dtype=torch.float64), torch.randint(0, 5, (64,), generator=g)
    after = {}
    for device in ("cpu", "cuda"):
        net = copy.deepcopy(model).to(device)
        opt = SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
        for _ in range(3):
            sam_update(net, F.cross_entropy, x.to(device), y.to(device), opt)
        after[device] = torch.cat([p.detach().reshape(-1).cpu() for p in net.parameters()])
    torch.testing.assert_close(after["cuda"], after["cpu"], rtol=1e-10, atol=1e-12)


def test_hessian_on_cuda_matches_the_cpu_in_float64():
    torch.manual_seed(0)
    model = resnet18(filters=4).eval()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    cpu = HessianOperator(model, F.cross_entropy, (x, y), dtype=torch.float64)
    gpu = HessianOperator(copy.deepcopy(model).cuda(), F.cross_entropy, (x, y), dtype=torch.float64)
    v = torch.randn(cpu.size, generator=g, dtype=torch.float64)
    torch.testing.assert_close(gpu.matvec(v.cuda()).cpu(), cpu.matvec(v), rtol=1e-8, atol=1e-10)
    assert gpu.mode_used == "double_backward+cache"
    top_cpu = lanczos(cpu, k=2, tol=1e-8, generator=torch.Generator().manual_seed(4)).eigenvalues
    top_gpu = lanczos(gpu, k=2, tol=1e-8, generator=torch.Generator().manual_seed(4)).eigenvalues
    torch.testing.assert_close(top_gpu.cpu(), top_cpu, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("variant", ["bf16", "channels_last"])
def test_bf16_and_channels_last_steps_stay_close_to_fp32(variant):
    torch.manual_seed(0)
    model = resnet18(filters=8).cuda()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(32, 3, 32, 32, generator=g).cuda()
    y = torch.randint(0, 10, (32,), generator=g).cuda()
    with torch.no_grad():
        reference = float(F.cross_entropy(model(x), y))
    inputs, net = x, copy.deepcopy(model)
    if variant == "channels_last":
        net, inputs = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=variant == "bf16"):
        loss = float(F.cross_entropy(net(inputs).float(), y))
    tolerance = 3e-2 if variant == "bf16" else 1e-4
    assert abs(loss - reference) <= tolerance * abs(reference)


@pytest.fixture
def tiny_config():
    """Generated regression data (no files, no optional packages: the GPU machine may lack them), a small MLP."""
    return {"data": {"name": "teacher-student", "val_size": 200}, "model": {"family": "mlp", "size": 0.25},
            "optim": {"lr": 0.02, "momentum": 0.9}, "train": {"epochs": 2, "batch_size": 64, "seed": 0}}


def _cuda_spec(tiny_config, *overrides):
    from samscale.spec.run import build_spec

    return build_spec(tiny_config, ["runtime.device=cuda", *overrides])


def test_train_run_on_cuda_under_every_precision_policy_records_it(tiny_config, tmp_path):
    from samscale.train.loop import train_run

    losses = {}
    for policy in ("highest", "tf32", "bf16", "fp16"):
        result = train_run(_cuda_spec(tiny_config, "optim.name=sam", f"runtime.precision={policy}"),
                           workdir=tmp_path / policy)
        assert result.status == "complete" and result.final["precision"] == policy
        assert result.final["device_name"] == torch.cuda.get_device_name(0)
        losses[policy] = result.history[-1]["train_loss"]
    for policy in ("tf32", "bf16", "fp16"):
        assert losses[policy] == pytest.approx(losses["highest"], rel=0.05), policy


def test_ensemble_on_cuda_equals_one_by_one_on_cuda(tiny_config, tmp_path):
    from samscale.train.ensemble import train_ensemble
    from samscale.train.loop import train_run

    specs = [_cuda_spec(tiny_config, f"train.seed={seed}", f"optim.name={name}", "optim.rho=0.05")
             for seed, name in ((0, "sgd"), (0, "sam"), (1, "sam"))]
    packed = train_ensemble(specs, workdir=tmp_path / "packed")
    for got, spec in zip(packed, specs):
        want = train_run(spec, workdir=tmp_path / "single")
        for row, ref in zip(got.history, want.history, strict=True):
            assert row["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-4)


def test_analysis_runs_on_the_gpu_in_fp32_and_leaves_the_model_as_it_was(tiny_config):
    from samscale.train.curvature import analyze_model
    from samscale.train.loop import build_model_for, dataset_for, loss_function

    spec = _cuda_spec(tiny_config, "analysis.n_examples=128", "analysis.what=[lambda_max]")
    dataset = dataset_for(spec)
    model = build_model_for(spec, dataset).cuda().train()
    before = copy.deepcopy(model.state_dict())
    on_gpu = analyze_model(spec, model, dataset, loss_function(dataset))
    assert model.training and next(model.parameters()).is_cuda
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    on_cpu = analyze_model(spec, copy.deepcopy(model).cpu(), dataset, loss_function(dataset))
    assert on_gpu["lambda_max"]["value"] == pytest.approx(on_cpu["lambda_max"]["value"], rel=1e-4)
