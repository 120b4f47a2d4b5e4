"""Configuration mistakes surface before any run starts: a DQN with a step schedule, a validation split larger than
the dataset, unknown dataset options, a negative split seed, a device this machine lacks, absent CIFAR-10 files.
Each stops `samscale sweep` and `samscale train` with one clear message and exit status 2, once for the whole sweep
(not per run), and writes nothing: no record in an existing store, no new work directory. A run that fails while
training keeps its own error, and the sweep's progress line shows that error's first line."""
from __future__ import annotations

import copy
import hashlib
import traceback
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY
from samscale.cli import error_headline, main
from samscale.spec.study import Study
from samscale.store import RunStore
from samscale.sweep.executors import SerialExecutor
from samscale.sweep.sweep import sweep
from samscale.workdir import store_path

BASE = copy.deepcopy(TINY)
BASE["train"]["epochs"] = 1
SEEDS = [0, 1, 2]

# (id, dotted overrides of the base, fragments of the one message)
CASES = [
    ("dqn-step-schedule", {"model.family": "dqn", "rl.env": "breakout"},
     ["DQN runs (rl.env: breakout) use a constant learning rate", "schedule.kind: constant (got 'step')"]),
    ("val-size-too-large", {"data.val_size": 100000},
     ["val_size=100000 must be a count in [0, 3999] (the training set has 4000)", "mnist1d"]),
    ("train-subset-too-large", {"data.train_subset": 5000},
     ["train_subset=5000 exceeds the 3872 training examples left after validation"]),
    ("unknown-data-option", {"data.options": {"num_sample": 300}},
     ["unknown option(s) ['num_sample'] for dataset 'mnist1d'", "valid options: num_samples, seed"]),
    ("negative-split-seed", {"data.split_seed": -1}, ["data.split_seed", "must be a seed >= 0, got -1"]),
    ("cuda-absent", {"runtime.device": "cuda"}, ["runtime.device 'cuda'", "this machine has no cuda device"]),
    ("cifar10-absent", {"data.name": "cifar10", "data.val_size": 5000},
     ["dataset 'cifar10' is not available", "pickle batches in", "not attempted (download=False)"]),
]


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _base(overrides: dict) -> dict:
    base = copy.deepcopy(BASE)
    for key, value in overrides.items():
        _set(base, key, value)
    return base


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A folder with a work directory `w` holding one finished run of study 'checks', a study file per case (the
    same study with the case's mistake, three runs) and a run file."""
    root = tmp_path_factory.mktemp("preflight")
    study = Study(name="checks", base=BASE, grid={"train.seed": [0]})
    assert sweep(study, root / "w", SerialExecutor()).count("complete") == 1
    for name, overrides, _ in CASES:
        data = {"name": "checks", "base": _base(overrides), "grid": {"train.seed": SEEDS}}
        (root / f"{name}.yaml").write_text(yaml.safe_dump(data))
    (root / "run.yaml").write_text(yaml.safe_dump(BASE))
    return root


def _argv(name: str, overrides: dict, command: str) -> list[str]:
    if command == "train":
        return ["train", "run.yaml", "--workdir", "w", "--threads", "1",
                *[f"--set={key}={yaml.safe_dump(value, default_flow_style=True).strip()}"
                  for key, value in overrides.items()]]
    return ["sweep", f"{name}.yaml", "--out", "w" if command == "sweep-existing" else "new", "--executor", "serial",
            "--no-report"]


@pytest.mark.parametrize("command", ["sweep-existing", "sweep-new", "train"])
@pytest.mark.parametrize("name, overrides, fragments", CASES, ids=[case[0] for case in CASES])
def test_mistakes_stop_before_any_run_with_one_message_and_no_record(world, monkeypatch, capsys, tmp_path, command,
                                                                      name, overrides, fragments):
    if name == "cuda-absent" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(world)
    if name == "cifar10-absent":
        monkeypatch.setenv("SAMSCALE_DATA", str(tmp_path / "no-data-here"))
    before = _snapshot(world)
    status = main(_argv(name, overrides, command))
    captured = capsys.readouterr()
    assert status == 2, captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err
    for fragment in fragments:
        assert captured.err.count(fragment) == 1, captured.err  # said once, not once per run
    assert "run " not in captured.out  # no run started
    assert _snapshot(world) == before  # no record, no checkpoint, no study file written
    assert not (world / "new").exists()


def test_a_run_that_fails_while_training_keeps_its_error_and_the_progress_shows_its_first_line(
        tmp_path, monkeypatch, capsys):
    from samscale.sweep import executors

    def fails(spec, **kwargs):
        raise ValueError(f"seed {spec.train.seed} went wrong\nsecond line of the message")

    monkeypatch.setattr(executors, "train_run", fails)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({"name": "fails", "base": BASE,
                                                         "grid": {"train.seed": [0, 1]}}))
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "study.yaml", "--out", "w", "--executor", "serial", "--no-report"]) == 1
    out = capsys.readouterr().out
    frame = RunStore(store_path(tmp_path / "w")).runs_frame()
    for _, run in frame.iterrows():
        seed = run["train.seed"]
        assert run["status"] == "failed" and f"ValueError: seed {seed} went wrong\n" in run["error"]
        assert f"run {run['run_id']} failed: ValueError: seed {seed} went wrong\n" in out
    assert "second line" not in out


def _traceback_of(error: BaseException) -> str:
    try:
        raise error
    except BaseException:
        return traceback.format_exc()


def test_error_headline_is_the_exception_line_of_a_traceback():
    def chained():
        try:
            {}["missing"]
        except KeyError as err:
            raise RuntimeError("while loading: the data\nare bad") from err

    try:
        chained()
    except RuntimeError:
        text = traceback.format_exc()
    assert text.startswith("Traceback") and "KeyError" in text
    assert error_headline(text) == "RuntimeError: while loading: the data"
    assert error_headline(_traceback_of(ValueError("one line"))) == "ValueError: one line"
    assert error_headline("plain message\nmore") == "plain message"
    assert error_headline(None) == "(no error recorded)"
