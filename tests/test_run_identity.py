"""A run is its spec plus the code that produced it; the store records both, and a sweep never mixes code versions
silently. Also the run's side effects: what it leaves on disk, in the process and in the store."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch

import samscale
from samscale.cli import main
from samscale.errors import ConfigError
from samscale.spec.run import build_spec
from samscale.spec.study import Study
from samscale.store import RunStore
from samscale.sweep.executors import SerialExecutor
from samscale.sweep.recorder import Heartbeat, StoreRecorder
from samscale.sweep.sweep import sweep
from samscale.train.checkpoint import load_checkpoint
from samscale.train.loop import build_model_for, dataset_for, train_run
from samscale.version import code_version
from samscale.workdir import checkpoint_path, store_path

OLD_VERSION = "0.0.1+g0123456789ab"


def _study(tiny_config: dict, name: str = "versions") -> Study:
    return Study.model_validate({
        "name": name,
        "base": {**tiny_config, "train": {**tiny_config["train"], "epochs": 1}},
        "grid": {"model.size": [0.25], "train.seed": [0, 1]},
        "arms": [{"name": "sgd", "set": {"optim.name": "sgd"}}],
    })


def _set_versions(workdir: Path, version: str) -> None:
    with sqlite3.connect(store_path(workdir)) as db:
        db.execute("UPDATE runs SET code_version = ?", (version,))


def test_code_version_names_the_checkout_commit():
    root = Path(samscale.__file__).resolve().parents[2]
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True)
    version = code_version()
    if commit.returncode != 0:  # an installed package outside a checkout
        assert version == samscale.__version__
        return
    assert version.startswith(f"{samscale.__version__}+g{commit.stdout.strip()}")
    assert version.removeprefix(f"{samscale.__version__}+g{commit.stdout.strip()}") in ("", ".dirty")


def test_every_finished_run_records_its_code_version(tiny_config, tmp_path):
    sweep(_study(tiny_config), tmp_path, SerialExecutor())
    frame = RunStore(store_path(tmp_path)).runs_frame()
    assert list(frame["code_version"]) == [code_version()] * 2


def test_sweep_refuses_runs_of_another_code_version_by_default(tiny_config, tmp_path):
    study = _study(tiny_config)
    sweep(study, tmp_path, SerialExecutor())
    _set_versions(tmp_path, OLD_VERSION)
    (tmp_path / "study.yaml").write_text("changed by hand\n")
    before = store_path(tmp_path).read_bytes()
    with pytest.raises(ConfigError, match=r"2 finished runs .* 0\.0\.1\+g0123456789ab.*--reuse-other-versions"):
        sweep(study, tmp_path, SerialExecutor())
    assert store_path(tmp_path).read_bytes() == before  # refused before anything was written
    assert (tmp_path / "study.yaml").read_text() == "changed by hand\n"
    frame = RunStore(store_path(tmp_path)).runs_frame()
    assert (frame["attempts"] == 1).all() and (frame["code_version"] == OLD_VERSION).all()


def test_reuse_keeps_and_rerun_retrains_runs_of_another_code_version(tiny_config, tmp_path):
    study = _study(tiny_config)
    sweep(study, tmp_path, SerialExecutor())
    first = RunStore(store_path(tmp_path)).runs_frame().set_index("run_id")
    _set_versions(tmp_path, OLD_VERSION)

    reused = sweep(study, tmp_path, SerialExecutor(), other_versions="reuse")
    assert reused.outcomes == [] and reused.reused_other_versions == 2
    assert (RunStore(store_path(tmp_path)).runs_frame()["attempts"] == 1).all()

    rerun = sweep(study, tmp_path, SerialExecutor(), other_versions="rerun")
    assert rerun.count("complete") == 2 and rerun.rerun_other_versions == 2
    again = RunStore(store_path(tmp_path)).runs_frame().set_index("run_id")
    assert (again["attempts"] == 2).all() and (again["code_version"] == code_version()).all()
    # trained from scratch with the same code: the same numbers (not resumed from the finished checkpoint)
    assert again.loc[first.index, "final_test_acc"].tolist() == first["final_test_acc"].tolist()
    assert (again["epochs_done"] == 1).all()


def test_cli_sweep_says_what_it_does_with_other_versions(tiny_config, tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text(_study(tiny_config).to_yaml())
    workdir = tmp_path / "w"
    common = ["sweep", str(path), "--out", str(workdir), "--executor", "serial", "--no-report"]
    assert main(common) == 0
    _set_versions(workdir, OLD_VERSION)
    capsys.readouterr()
    assert main(common) == 2
    assert "--rerun-other-versions" in capsys.readouterr().err
    assert main([*common, "--reuse-other-versions"]) == 0
    assert "reusing them as they are" in capsys.readouterr().out
    assert main(["runs", "--workdir", str(workdir)]) == 0
    assert OLD_VERSION in capsys.readouterr().out


def test_report_header_shows_the_code_versions(tiny_config, tmp_path):
    from samscale.report.study_report import build_study_report

    sweep(_study(tiny_config), tmp_path, SerialExecutor())
    page = build_study_report(tmp_path, command="samscale report")
    assert code_version() in Path(page).read_text()


def test_finished_checkpoint_keeps_weights_only_unless_asked(tiny_config, tmp_path):
    spec = build_spec(tiny_config, ["train.epochs=2", "optim.name=sam"])
    train_run(spec, workdir=tmp_path / "slim")
    slim = load_checkpoint(checkpoint_path(tmp_path / "slim", spec.run_id))
    assert set(slim) == {"run_id", "attempt", "code_version", "spec", "epoch", "model", "history", "cost"}
    assert slim["epoch"] == 2
    full_spec = build_spec(tiny_config, ["train.epochs=2", "optim.name=sam", "runtime.keep_optimizer_state=true"])
    assert full_spec.run_id == spec.run_id  # a runtime setting, not part of the run's identity
    train_run(full_spec, workdir=tmp_path / "full")
    assert "optimizer" in load_checkpoint(checkpoint_path(tmp_path / "full", spec.run_id))
    # a finished weights-only checkpoint resumes as finished, with the same numbers
    again = train_run(spec, workdir=tmp_path / "slim")
    assert again.status == "complete" and len(again.history) == 2


def test_building_a_model_leaves_the_global_rng_alone(tiny_config):
    spec = build_spec(tiny_config)
    dataset = dataset_for(spec)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    first = build_model_for(spec, dataset)
    assert torch.equal(torch.rand(3), expected)
    second = build_model_for(spec, dataset)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_a_run_restores_the_thread_count(tiny_config):
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    train_run(build_spec(tiny_config, ["train.epochs=1", f"runtime.threads={other}"]))
    assert torch.get_num_threads() == before


def test_non_finite_numbers_are_stored_as_strict_json_null(tiny_config, tmp_path):
    store = RunStore(tmp_path / "s.db")
    spec = build_spec(tiny_config, ["optim.lr=1e6", "optim.momentum=0.99"])
    store.register(spec)
    result = train_run(spec, on_event=StoreRecorder(store, store.claim(spec.run_id)))
    assert result.status == "diverged"

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-JSON constant {constant} in the store")

    with sqlite3.connect(store.path) as db:
        texts = [row[0] for row in db.execute("SELECT metrics FROM history")]
        texts += [row[0] for row in db.execute("SELECT final FROM runs")]
    rows = [json.loads(text, parse_constant=refuse) for text in texts]
    assert any(row.get("train_loss", 0) is None for row in rows)


def test_stale_runs_of_other_hosts_are_taken_over_and_heartbeats_keep_them(tiny_config, tmp_path):
    store = RunStore(tmp_path / "s.db", stale_after_s=5.0)
    spec = build_spec(tiny_config)
    store.register(spec)
    with sqlite3.connect(store.path) as db:  # held by a process on another machine, last heard of 60 s ago
        db.execute("UPDATE runs SET status = 'running', owner = 'elsewhere:1', heartbeat = ?", (time.time() - 60,))
    claim = store.claim(spec.run_id)
    assert claim  # stale: taken over
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET owner = 'elsewhere:1', heartbeat = ?", (time.time() - 60,))
    with Heartbeat(store, [claim], interval_s=0.05):
        time.sleep(0.3)  # the holder keeps beating: the run is no longer stale
        assert not store.claim(spec.run_id)


def test_curvature_batches_read_image_folders(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from samscale.data import Dataset, ImageFolderSplit, Split
    from samscale.train.curvature import curvature_batches

    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy()).save(path)
        paths.append(str(path))
    split = ImageFolderSplit(tuple(paths), torch.tensor([0, 1, 0]), ("a", "b"), training=True, image_size=32,
                             resize_size=36)
    empty = Split(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long))
    dataset = Dataset("imagenet", split, empty, empty, "classification", 2, 2, (3, 32, 32), "files")
    batches = curvature_batches(dataset, n_examples=2, batch_size=1)
    assert [tuple(x.shape) for x, _ in batches] == [(1, 3, 32, 32)] * 2
    assert torch.equal(batches[1][0][0], split.as_eval().load(1)) and batches[1][1].tolist() == [1]
