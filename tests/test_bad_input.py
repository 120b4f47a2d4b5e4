"""Bad input, on every command and in the Python API, ends in a short message that names the bad value or field and
what would be valid, with exit status 2 (or ConfigError / ValueError), no traceback, and an existing work directory
(run store, study file, checkpoints, report) left byte-for-byte as it was; a new work directory is not even created.
"""
from __future__ import annotations

import copy
import hashlib
import sqlite3
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY
from samscale.cli import main
from samscale.errors import ConfigError
from samscale.optim.sam import SAM
from samscale.spec.run import build_spec
from samscale.spec.study import Study, load_study
from samscale.store import RunStore
from samscale.sweep.executors import LocalPoolExecutor, SerialExecutor
from samscale.sweep.sweep import sweep
from samscale.train.checkpoint import load_checkpoint

BASE = copy.deepcopy(TINY)
BASE["train"]["epochs"] = 1
STUDY = {"name": "tiny", "base": BASE, "grid": {"train.seed": [0]},
         "budgets": {"smoke": {"set": {"train.epochs": 1}}}}


def _variant(**changes) -> dict:
    """STUDY with top-level keys replaced; `grid_extra` adds grid axes."""
    study = copy.deepcopy(STUDY)
    study["grid"].update(changes.pop("grid_extra", {}))
    study.update(changes)
    return study


STUDY_FILES = {
    "study.yaml": STUDY,
    "axis.yaml": _variant(grid_extra={"optim.rhoo": [0.1]}),
    "empty_axis.yaml": _variant(grid_extra={"optim.rho": []}),
    "inf_axis.yaml": _variant(grid_extra={"optim.rho": [float("inf")]}),
    "arm_set.yaml": _variant(arms=[{"name": "sam", "set": {"optim.rhoo": 1}}]),
    "arm_grid.yaml": _variant(arms=[{"name": "sam", "grid": {"optim.lr": []}}]),
    "dup_arms.yaml": _variant(arms=[{"name": "a"}, {"name": "a"}]),
    "no_arms.yaml": _variant(arms=[]),
    "budget_set.yaml": _variant(budgets={"smoke": {"set": {"train.epochz": 1}}}),
    "negative_size.yaml": _variant(base={**BASE, "model": {"family": "mlp", "size": -1}}),
    "named_size.yaml": _variant(base={**BASE, "model": {"family": "mlp", "size": "huge"}}),
    "selection.yaml": _variant(selection={"tune": ["optim.rhoo"]}),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A folder with a work directory `w` holding one finished tiny run, plus bad files of every kind."""
    root = tmp_path_factory.mktemp("bad-input")
    study = Study.model_validate(STUDY)
    assert sweep(study, root / "w", SerialExecutor()).count("complete") == 1
    (root / "w" / "report").mkdir()
    (root / "w" / "report" / "report.html").write_text("<p>earlier report</p>")
    for name, content in STUDY_FILES.items():
        (root / name).write_text(yaml.safe_dump(content))
    (root / "run.yaml").write_text(yaml.safe_dump(BASE))
    (root / "broken.yaml").write_text("optim: {lr: 0.1\ntrain: [1, 2\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "corrupt").mkdir()
    (root / "corrupt" / "samscale.db").write_text("not a database, just text " * 40)
    (root / "truncated").mkdir()
    (root / "truncated" / "samscale.db").write_bytes((root / "w" / "samscale.db").read_bytes()[:4096])
    (root / "foreign").mkdir()
    with sqlite3.connect(root / "foreign" / "samscale.db") as db:
        db.execute("CREATE TABLE runs (id INTEGER)")
        db.execute("CREATE TABLE notes (text TEXT)")
    db.close()
    (root / "study-only").mkdir()
    (root / "study-only" / "study.yaml").write_text(yaml.safe_dump(STUDY))
    (root / "text.pt").write_text("hello, I am not a checkpoint")
    torch.save([1, 2, 3], root / "list.pt")
    torch.save({"weights": torch.zeros(3)}, root / "nospec.pt")
    torch.save({"spec": '{"optim": {"rho": -1}}', "model": {}}, root / "badspec.pt")
    return root


def _snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run_id(world: Path) -> str:
    return next((world / "w" / "checkpoints").glob("*.pt")).stem


# (argv, expected fragments of the message). Paths are relative to the `world` folder (the working directory).
CLI_CASES = [
    (["train", "run.yaml", "--workdir", "w", "--threads", "0"], ["--threads", "0"]),
    (["train", "run.yaml", "--workdir", "w", "--threads", "-1"], ["--threads", "-1"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "optim.rho=.inf"], ["optim.rho", "finite", "inf"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "optim.lr=.nan"], ["optim.lr", "finite", "nan"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "optim.weight_decay=-.inf"], ["optim.weight_decay", "finite"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "optim.betas=[0.9, .inf]"], ["optim.betas", "finite"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "optim.momentum=1.5"], ["optim.momentum", "1.5", "[0, 1)"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "model.size=-1"], ["model.size", "-1", "> 0"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "model.size=0"], ["model.size", "0", "> 0"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "model.size=huge"], ["model.size", "'huge'", "ladder"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "model.options.depth=3"], ["depth", "base_hidden"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "train.epochs=0"], ["train.epochs", "0", ">= 1"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "train.batch_size=-3"], ["train.batch_size", "-3"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "data.val_size=-1"], ["data.val_size", "-1"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "data.val_size=1.5"], ["data.val_size", "1.5", "[0, 1)"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "data.train_subset=0"], ["data.train_subset", "0"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "data.name=cifar11"], ["cifar11", "mnist"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "runtime.threads=0"], ["runtime.threads", "0"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "runtime.eval_batch_size=0"], ["runtime.eval_batch_size"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "runtime.device=tpu"], ["runtime.device", "'tpu'", "cuda"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "schedule.gamma=0"], ["schedule.gamma", "> 0"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "analysis.what=[bogus]"], ["bogus", "lambda_max"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "optim.rhoo=1"],
     ["unknown field optim.rhoo", "valid fields of optim", "rho"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "optim.lr.x=1"], ["optim.lr"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "nonsense"], ["'nonsense'", "key=value"]),
    (["train", "run.yaml", "--workdir", "w", "--set", "optim.rho=[1,"], ["optim.rho=[1,", "YAML"]),
    (["train", "missing.yaml", "--workdir", "w"], ["missing.yaml", "not found"]),
    (["train", "broken.yaml", "--workdir", "w"], ["broken.yaml", "not valid YAML", "line 2"]),
    (["train", "list.yaml", "--workdir", "w"], ["list.yaml", "mapping"]),
    (["train", "run.yaml", "--workdir", "corrupt"], ["corrupt/samscale.db", "not a samscale run store"]),
    (["train", "run.yaml", "--workdir", "w/samscale.db"], ["w/samscale.db", "--workdir"]),
    (["sweep", "study.yaml", "--out", "w", "--workers", "0"], ["--workers", "0"]),
    (["sweep", "study.yaml", "--out", "w", "--threads", "-2"], ["--threads", "-2"]),
    (["sweep", "study.yaml", "--out", "w", "--executor", "ray", "--gpus-per-run", "-1"], ["--gpus-per-run", "-1"]),
    (["sweep", "axis.yaml", "--out", "w"], ["axis.yaml", "unknown field optim.rhoo", "valid fields of optim"]),
    (["sweep", "empty_axis.yaml", "--out", "w"], ["optim.rho", "non-empty"]),
    (["sweep", "inf_axis.yaml", "--out", "w"], ["optim.rho", "finite", "inf"]),
    (["sweep", "arm_set.yaml", "--out", "w"], ["arms.0.set", "unknown field optim.rhoo"]),
    (["sweep", "arm_grid.yaml", "--out", "w"], ["arms.0.grid", "optim.lr", "non-empty"]),
    (["sweep", "dup_arms.yaml", "--out", "w"], ["arm names", "'a'"]),
    (["sweep", "no_arms.yaml", "--out", "w"], ["at least one arm"]),
    (["sweep", "budget_set.yaml", "--out", "w", "--budget", "smoke"], ["train.epochz", "valid fields of train"]),
    (["sweep", "study.yaml", "--out", "w", "--budget", "paper"], ["'paper'", "valid: smoke"]),
    (["sweep", "selection.yaml", "--out", "w"], ["selection", "optim.rhoo"]),
    (["sweep", "negative_size.yaml", "--out", "new"], ["model.size", "-1"]),
    (["sweep", "named_size.yaml", "--out", "new"], ["'huge'", "mlp"]),
    (["sweep", "broken.yaml", "--out", "new"], ["broken.yaml", "line 2, column 6"]),
    (["sweep", "run.yaml", "--out", "new"], ["unknown field data", "valid fields of Study"]),
    (["sweep", "study.yaml", "--out", "corrupt"], ["corrupt/samscale.db", "not a samscale run store"]),
    (["runs", "--workdir", "corrupt"], ["corrupt/samscale.db", "not a samscale run store"]),
    (["runs", "--workdir", "truncated"], ["truncated/samscale.db", "malformed"]),
    (["runs", "--workdir", "foreign"], ["foreign/samscale.db", "not samscale's runs table"]),
    (["runs", "--workdir", "nowhere"], ["no run store", "nowhere"]),
    (["runs", "--workdir", "w", "--study", "nosuch"], ["'nosuch'", "tiny"]),
    (["runs", "--workdir", "w", "--status", "bogus"], ["--status", "bogus"]),
    (["report", "nowhere"], ["nowhere", "study.yaml"]),
    (["report", "study-only"], ["study-only", "no run store"]),
    (["analyze", "nope", "--workdir", "w"], ["'nope'", "w/samscale.db"]),
    (["analyze", "text.pt", "--workdir", "w"], ["text.pt", "not a readable checkpoint"]),
    (["analyze", "list.pt", "--workdir", "w"], ["list.pt", "list"]),
    (["analyze", "nospec.pt", "--workdir", "w"], ["nospec.pt", "not a samscale checkpoint"]),
    (["analyze", "badspec.pt", "--workdir", "w"], ["badspec.pt", "optim.rho", "-1"]),
    (["analyze", "RUN", "--workdir", "w", "--what", "lambda_max,bogus"], ["--what", "bogus", "lambda_max"]),
    (["analyze", "RUN", "--workdir", "w", "--n-examples", "0"], ["--n-examples", "0"]),
    (["analyze", "RUN", "--workdir", "corrupt"], ["corrupt/samscale.db", "not a samscale run store"]),
    (["reproduce", "nosuch"], ["'nosuch'", "mnist-mlp"]),
    (["reproduce", "mnist-mlp", "--budget", "smoke", "--workers", "0", "--out", "new"], ["--workers", "0"]),
    (["reproduce", "stability", "--budget", "smoke", "--threads", "0", "--out", "new"], ["--threads", "0"]),
    (["reproduce", "mnist-mlp", "--budget", "huge", "--out", "new"], ["--budget", "huge"]),
    (["models", "--family", "nosuch"], ["'nosuch'", "mlp"]),
]


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


# (callable of the world folder, expected exception type, expected fragments of its message)
API_CASES = [
    (lambda w: build_spec({"optim": {"rho": float("inf")}}), ConfigError, ["optim.rho", "finite"]),
    (lambda w: build_spec({"model": {"size": 0}}), ConfigError, ["model.size", "> 0"]),
    (lambda w: build_spec({"optim": {"rhoo": 1}}), ConfigError, ["unknown field optim.rhoo", "asam_eta"]),
    (lambda w: build_spec([1, 2]), ConfigError, ["mapping", "list"]),
    (lambda w: build_spec({"data": {"val_size": float("nan")}}), ConfigError, ["data.val_size"]),
    (lambda w: load_study(w / "broken.yaml"), ConfigError, ["broken.yaml", "line"]),
    (lambda w: load_study(w / "axis.yaml"), ConfigError, ["optim.rhoo", "valid fields of optim"]),
    (lambda w: load_study(w / "study.yaml", "paper"), ConfigError, ["'paper'", "smoke"]),
    (lambda w: Study(name="s", grid={"optim.rho": []}), ValueError, ["optim.rho", "non-empty"]),
    (lambda w: Study(name="s", grid={"optimm.rho": [1]}), ValueError, ["optimm.rho", "valid fields of RunSpec"]),
    (lambda w: Study(name="s", base=BASE, grid={"optim.lr": [-1.0]}).expand(), ConfigError, ["optim.lr", "-1"]),
    (lambda w: RunStore(w / "corrupt" / "samscale.db"), ConfigError, ["not a samscale run store"]),
    (lambda w: RunStore(w / "foreign" / "samscale.db"), ConfigError, ["runs table"]),
    (lambda w: RunStore(w / "w" / "samscale.db" / "x.db"), ConfigError, ["x.db"]),
    (lambda w: RunStore(w / "truncated" / "samscale.db").runs_frame(), ConfigError, ["malformed"]),
    (lambda w: load_checkpoint(w / "text.pt"), ConfigError, ["text.pt", "not a readable checkpoint"]),
    (lambda w: SAM(_params(), torch.optim.SGD, rho=-1.0, lr=0.1), ValueError, ["rho", "-1"]),
    (lambda w: SAM(_params(), torch.optim.SGD, rho=float("nan"), lr=0.1), ValueError, ["rho", "nan"]),
    (lambda w: SAM(_params(), torch.optim.SGD, rho=0.05, lr=0.1, normalize="yes"), ValueError, ["normalize"]),
    (lambda w: SAM(_params(), "sgd", rho=0.05), ValueError, ["base_optimizer_cls", "'sgd'"]),
    (lambda w: LocalPoolExecutor(workers=0), ValueError, ["workers=0"]),
]


def _cases():
    for argv, fragments in CLI_CASES:
        yield pytest.param("cli", argv, 2, fragments, id=" ".join(argv))
    for index, (call, error, fragments) in enumerate(API_CASES):
        yield pytest.param("api", call, error, fragments, id=f"api-{index}-{fragments[0]}")


@pytest.mark.parametrize("kind, what, expected, fragments", list(_cases()))
def test_bad_input_is_refused_clearly_and_changes_nothing(world, monkeypatch, capsys, kind, what, expected,
                                                          fragments):
    monkeypatch.chdir(world)
    before = _snapshot(world)
    if kind == "cli":
        argv = [_run_id(world)[:6] if arg == "RUN" else arg for arg in what]
        try:
            status = main(argv)
        except SystemExit as stop:  # argparse's own usage errors
            status = stop.code
        captured = capsys.readouterr()
        message = captured.err
        assert status == expected, captured.out + captured.err
        assert "Traceback" not in captured.out + captured.err
        assert message.count("\n") < 12, message  # short: a usage line and the message
    else:
        with pytest.raises(expected) as info:
            what(world)
        message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert _snapshot(world) == before  # no file written, changed or deleted (store, checkpoints, report, inputs)
    assert not (world / "new").exists()
