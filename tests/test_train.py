"""The trainer: determinism, divergence handling, checkpoint/resume, SAM variants, sparsity, regression."""
import math

import pytest

from samscale.spec.run import build_spec
from samscale.store import RunStore
from samscale.sweep.recorder import StoreRecorder
from samscale.train.checkpoint import load_checkpoint
from samscale.train.loop import build_model_for, dataset_for, train_run
from samscale.train.summary import summarize_history
from samscale.workdir import checkpoint_path


def _numbers(history):
    """A run's history without its wall-clock times."""
    return [{key: value for key, value in row.items() if key != "seconds"} for row in history]


def test_same_spec_and_seed_give_identical_numbers(tiny_config):
    spec = build_spec(tiny_config, ["optim.name=sam"])
    first, second = train_run(spec), train_run(spec)
    assert _numbers(first.history) == _numbers(second.history)
    assert first.final["final_test_acc"] == second.final["final_test_acc"]
    other_seed = train_run(build_spec(tiny_config, ["optim.name=sam", "train.seed=1"]))
    assert other_seed.final["final_train_loss"] != first.final["final_train_loss"]


def test_training_learns_and_records_every_epoch(tiny_config, tmp_path):
    store = RunStore(tmp_path / "s.db")
    spec = build_spec(tiny_config, ["train.epochs=6"])
    store.register(spec)
    result = train_run(spec, on_event=StoreRecorder(store, store.claim(spec.run_id)))
    assert result.status == "complete"
    history = store.history(spec.run_id)
    assert list(history["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert result.final["final_test_acc"] > 0.2  # 10 classes: chance is 0.1
    # the lr follows the step schedule: x0.1 after half of the steps
    # (each epoch logs the rate its first step used: epochs 1-3 at 0.05, epochs 4-6 at 0.005)
    assert list(history["lr"]) == pytest.approx([0.05] * 3 + [0.005] * 3)
    row = store.runs_frame().iloc[0]
    assert row["status"] == "complete" and row["n_params"] == 40 * 75 + 75 + 75 * 25 + 25 + 25 * 10 + 10


def test_divergence_ends_the_run_without_crashing(tiny_config, tmp_path):
    store = RunStore(tmp_path / "s.db")
    spec = build_spec(tiny_config, ["optim.lr=1e6", "optim.momentum=0.99"])
    store.register(spec)
    result = train_run(spec, on_event=StoreRecorder(store, store.claim(spec.run_id)))
    assert result.status == "diverged"
    assert store.status(spec.run_id) == "diverged"
    assert not math.isfinite(result.history[-1]["train_loss"])


@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
def test_resume_from_checkpoint_equals_uninterrupted(tiny_config, tmp_path, optimizer):
    spec = build_spec(tiny_config, [f"optim.name={optimizer}", "train.epochs=4"])
    whole = train_run(spec, workdir=tmp_path / "a")
    partial = train_run(spec, workdir=tmp_path / "b", max_epochs=2)
    assert partial.status == "running" and load_checkpoint(checkpoint_path(tmp_path / "b", spec.run_id))["epoch"] == 2
    resumed = train_run(spec, workdir=tmp_path / "b")
    assert _numbers(resumed.history) == _numbers(whole.history)
    assert resumed.final["final_train_loss"] == whole.final["final_train_loss"]


@pytest.mark.parametrize("variant", ["usam", "asam", "sam-m"])
def test_sam_variants_train(tiny_config, variant):
    overrides = ["optim.name=sam", "optim.m=16"] if variant == "sam-m" else [f"optim.name={variant}"]
    result = train_run(build_spec(tiny_config, overrides + ["optim.rho=0.05"]))
    assert result.status == "complete" and result.final["final_train_loss"] < math.log(10)


def test_pruned_weights_stay_zero(tiny_config):
    spec = build_spec(tiny_config, ["sparsity.method=random", "sparsity.sparsity=0.8", "optim.name=sam"])
    result = train_run(spec)
    model = build_model_for(spec, dataset_for(spec))
    weights = sum(p.numel() for p in model.parameters() if p.dim() > 1)
    biases = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    # random layer-wise pruning keeps round(0.2 n) of each weight matrix; biases are not pruned
    assert result.final["n_nonzero"] <= round(0.2 * weights) + 3 + biases
    assert result.final["n_nonzero"] >= round(0.2 * weights) - 3


def test_regression_task(tiny_config):
    config = dict(tiny_config, data={"name": "teacher-student", "val_size": 64, "augment": False},
                  model={"family": "two_layer", "size": 32})
    config["optim"] = {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0}
    result = train_run(build_spec(config, ["optim.name=sam"]))
    assert result.status == "complete"
    assert "final_test_loss" in result.final and "final_test_acc" not in result.final
    assert result.final["best_epoch"] == min(result.history, key=lambda r: r["val_loss"])["epoch"]


def test_summarize_history_picks_best_validation_epoch():
    history = [
        {"epoch": 1, "val_acc": 0.5, "val_loss": 1.0, "test_acc": 0.4, "test_loss": 1.1, "train_loss": 2.0},
        {"epoch": 2, "val_acc": 0.8, "val_loss": 0.6, "test_acc": 0.7, "test_loss": 0.7, "train_loss": 1.0},
        {"epoch": 3, "val_acc": 0.7, "val_loss": 0.5, "test_acc": 0.9, "test_loss": 0.4, "train_loss": 0.5},
    ]
    final = summarize_history(history, score="val_acc")
    assert final["best_epoch"] == 2 and final["best_test_acc"] == 0.7 and final["final_test_acc"] == 0.9
    assert summarize_history(history, score="val_loss")["best_epoch"] == 3


@pytest.mark.slow
def test_compiled_model_trains_like_eager(tiny_config):
    eager = train_run(build_spec(tiny_config, ["optim.name=sam"]))
    compiled = train_run(build_spec(tiny_config, ["optim.name=sam", "runtime.compile=true"]))
    assert compiled.final["final_train_loss"] == pytest.approx(eager.final["final_train_loss"], rel=1e-3)
