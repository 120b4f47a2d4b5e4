"""The precision policy: TF32 switches set and restored, autocast and GradScaler in train_run (fp16 on the CPU),
what every run records, the analysis in fp32 on a copy of the model, and what reports show."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from torch import nn

from samscale.errors import ConfigError
from samscale.report.study_report import _compute
from samscale.spec.run import build_spec
from samscale.train import curvature
from samscale.train.precision import autocast, compute_record, grad_scaler, precision_policy

MATMUL = torch.backends.cuda.matmul
CONV = torch.backends.cudnn.conv


def test_policies_set_tf32_and_restore_torchs_settings():
    before = (MATMUL.fp32_precision, CONV.fp32_precision, torch.backends.cudnn.benchmark)
    with precision_policy("highest", cudnn_benchmark=True):
        assert (MATMUL.fp32_precision, CONV.fp32_precision) == ("ieee", "ieee")
        assert torch.backends.cudnn.benchmark is True
    for policy in ("tf32", "bf16", "fp16"):
        with precision_policy(policy):
            assert (MATMUL.fp32_precision, CONV.fp32_precision) == ("tf32", "tf32")
    with pytest.raises(RuntimeError), precision_policy("tf32"):
        raise RuntimeError("restored also when the block fails")
    assert (MATMUL.fp32_precision, CONV.fp32_precision, torch.backends.cudnn.benchmark) == before
    with pytest.raises(ValueError, match="unknown precision 'fp8'; valid: highest, tf32, bf16, fp16"):
        precision_policy("fp8").__enter__()


def test_autocast_and_scaler_follow_the_policy():
    cpu = torch.device("cpu")
    x = torch.randn(4, 4)
    for policy, dtype in (("highest", torch.float32), ("tf32", torch.float32), ("bf16", torch.bfloat16),
                          ("fp16", torch.float16)):
        with autocast(policy, cpu):
            assert (x @ x).dtype == dtype, policy
    assert grad_scaler("fp16", cpu) is not None and grad_scaler("bf16", cpu) is None


def test_precision_is_a_runtime_setting_with_a_bf16_shorthand(tiny_config):
    assert build_spec(tiny_config, ["runtime.bf16=true"]).runtime.precision == "bf16"
    with pytest.raises(ConfigError, match="runtime.bf16=true asks for precision bf16"):
        build_spec(tiny_config, ["runtime.bf16=true", "runtime.precision=fp16"])
    with pytest.raises(ConfigError, match="runtime.precision"):
        build_spec(tiny_config, ["runtime.precision=fp8"])
    ids = {build_spec(tiny_config, [f"runtime.precision={p}"]).run_id for p in ("highest", "tf32", "bf16", "fp16")}
    assert len(ids) == 1  # not part of the identity: recorded beside the run instead


def test_fp16_with_a_grad_scaler_trains_resumes_and_records_how_it_computed(tiny_config, tmp_path):
    """fp16 autocast + GradScaler in train_run (on the CPU): the run ends complete near the fp32 run, the scaler's
    state is checkpointed (an interrupted run resumes to the uninterrupted one's numbers), and every run records its
    device, precision and torch version."""
    from samscale.train.checkpoint import load_checkpoint
    from samscale.train.loop import train_run
    from samscale.workdir import checkpoint_path

    overrides = ["optim.name=sam", "optim.rho=0.05", "runtime.keep_optimizer_state=true"]
    half = build_spec(tiny_config, overrides + ["runtime.precision=fp16"])
    whole = train_run(half, workdir=tmp_path / "whole")
    assert whole.status == "complete"
    assert {k: whole.final[k] for k in ("device_name", "precision", "torch_version")} == {
        "device_name": "cpu", "precision": "fp16", "torch_version": torch.__version__}
    state = load_checkpoint(checkpoint_path(tmp_path / "whole", half.run_id))
    assert state["scaler"]["scale"] > 0
    train_run(half, workdir=tmp_path / "resumed", max_epochs=1)
    resumed = train_run(half, workdir=tmp_path / "resumed")
    for row, ref in zip(resumed.history, whole.history, strict=True):
        assert row["train_loss"] == ref["train_loss"] and row["val_loss"] == ref["val_loss"]
    full = train_run(build_spec(tiny_config, overrides), workdir=tmp_path / "fp32")
    assert full.final["precision"] == "highest"
    assert whole.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=0.05)
    assert whole.history[-1]["train_loss"] != full.history[-1]["train_loss"]  # fp16 really computed in fp16


def test_analysis_runs_in_fp32_on_a_copy_and_leaves_the_callers_model_alone(tiny_config, monkeypatch):
    from samscale.train.loop import dataset_for, loss_function

    spec = build_spec(tiny_config, ["analysis.n_examples=64", "analysis.what=[lambda_max,trace]"])
    dataset = dataset_for(spec)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(40, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 10)).train()
    before = copy.deepcopy(model.state_dict())
    seen = {}
    real = curvature.analyze

    def spy(analysed, *args, **kwargs):
        seen.update(matmul=MATMUL.fp32_precision, conv=CONV.fp32_precision, same=analysed is model,
                    training=analysed.training, dtype=next(analysed.parameters()).dtype)
        return real(analysed, *args, **kwargs)

    monkeypatch.setattr(curvature, "analyze", spy)
    with precision_policy("tf32"):  # the training policy around it: the analysis still runs without TF32
        report = curvature.analyze_model(spec, model, dataset, loss_function(dataset))
    assert seen == {"matmul": "ieee", "conv": "ieee", "same": False, "training": False, "dtype": torch.float32}
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    reference = real(copy.deepcopy(model).eval(), loss_function(dataset),
                     curvature.curvature_batches(dataset, 64), what=["lambda_max", "trace"], top_k=spec.analysis.top_k,
                     seed=spec.train.seed)
    assert report["lambda_max"]["value"] == reference["lambda_max"]["value"]
    assert report["trace"]["value"] == reference["trace"]["value"]


def test_reports_show_where_and_how_runs_computed():
    record = compute_record(torch.device("cpu"), "tf32")
    assert record == {"device_name": "cpu", "precision": "tf32", "torch_version": torch.__version__}
    frame = pd.DataFrame([{"status": "complete", **record}, {"status": "complete", **record},
                          {"status": "complete", "device_name": "NVIDIA H100", "precision": "bf16",
                           "torch_version": "2.13.0"},
                          {"status": "pending", "device_name": None, "precision": None, "torch_version": None}])
    assert _compute(frame) == (f"cpu, precision tf32, torch {torch.__version__} (2 runs); "
                               "NVIDIA H100, precision bf16, torch 2.13.0 (1 runs)")
    assert _compute(frame.iloc[:2]) == f"cpu, precision tf32, torch {torch.__version__}"
    assert _compute(pd.DataFrame([{"status": "complete", "code_version": "x"}])) == "(not recorded)"


def test_train_run_autotunes_convolutions_on_cuda_only_and_when_the_policy_allows(tiny_config, monkeypatch):
    import samscale.train.loop as loop

    calls = []

    class Entered(Exception):
        pass

    def spy(policy, *, cudnn_benchmark=False):
        calls.append((policy, cudnn_benchmark))
        raise Entered

    monkeypatch.setattr(loop, "precision_policy", spy)
    cases = [("cpu", [], ("highest", False)), ("cuda", [], ("highest", True)),
             ("cuda", ["runtime.cudnn_benchmark=false", "runtime.precision=tf32"], ("tf32", False))]
    for device, overrides, expected in cases:
        monkeypatch.setattr(loop, "resolve_device", lambda name, _d=device: torch.device(_d))
        with pytest.raises(Entered):
            loop.train_run(build_spec(tiny_config, overrides))
        assert calls[-1] == expected


def test_a_scaled_step_shares_gradients_before_the_scaler_looks_for_overflow():
    """`before_step` (the average over processes) sees the scaled gradients, so an inf in any process reaches
    every process before GradScaler.step decides; the step itself uses the unscaled gradient."""
    from samscale.train.loop import _step

    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    seen = []
    loss = (weight**2).sum()  # gradient 2w = (2, -4)
    _step(optimizer, loss, torch.amp.GradScaler("cpu", init_scale=4.0),
          before_step=lambda: seen.append(weight.grad.clone()))
    assert torch.equal(seen[0], torch.tensor([8.0, -16.0]))  # 4 × (2, -4)
    assert torch.equal(weight.detach(), torch.tensor([0.0, 0.0]))  # w - 0.5 · (2, -4)

    def overflow_elsewhere():  # another process overflowed: its inf arrives in the average
        weight.grad[0] = float("inf")

    loss = (weight**2).sum()
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    _step(optimizer, loss, scaler, before_step=overflow_elsewhere)
    assert torch.equal(weight.detach(), torch.tensor([0.0, 0.0])) and scaler.get_scale() == 2.0  # skipped, backed off
