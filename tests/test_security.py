"""Files are read without running code: a crafted pickle whose unpickling would create a file is refused, with a
clear message, by `samscale analyze`, by resuming a run (CLI, Python API and a sweep), and by the dataset readers."""
from __future__ import annotations

import builtins
import hashlib
import io
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from samscale.cli import main
from samscale.data.cifar10 import read_cifar_batch
from samscale.data.errors import UnreadableFile
from samscale.data.safe_pickle import load_array_pickle
from samscale.errors import ConfigError
from samscale.spec.run import build_spec
from samscale.spec.study import Study
from samscale.store import RunStore
from samscale.sweep.executors import SerialExecutor
from samscale.sweep.sweep import sweep
from samscale.train.checkpoint import load_checkpoint
from samscale.train.loop import train_run
from samscale.workdir import checkpoint_path, store_path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "samscale"


class _Payload:
    """Unpickling this calls `action(*args)`: what an attacker's file would do."""

    def __init__(self, action, *args):
        self.action, self.args = action, args

    def __reduce__(self):
        return self.action, self.args


def _payloads(marker: Path) -> dict[str, _Payload]:
    return {"os.system": _Payload(os.system, f"touch {marker}"), "builtins.open": _Payload(builtins.open, str(marker), "w")}


@pytest.fixture(params=["os.system", "builtins.open"])
def payload(request, tmp_path):
    """(payload object, the file its unpickling would create)."""
    marker = tmp_path / "owned"
    return _payloads(marker)[request.param], marker


def _write_crafted(path: Path, payload: _Payload, form: str) -> None:
    """A checkpoint-looking file: torch's zip format, or a bare pickle (torch's legacy format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if form == "zip":
        torch.save({"spec": "{}", "model": {"weight": payload}}, path)
    else:
        path.write_bytes(pickle.dumps({"spec": "{}", "model": payload}, protocol=2))


def _tiny_spec(tiny_config, seed: int = 7):
    return build_spec(tiny_config, [f"train.seed={seed}", "train.epochs=1"])


def test_the_payload_really_creates_the_file(payload):
    """The oracle: plain unpickling of the crafted object does create the marker (so its absence below means refusal)."""
    crafted, marker = payload
    pickle.loads(pickle.dumps(crafted))
    assert marker.exists()


@pytest.mark.parametrize("form", ["zip", "pickle"])
def test_analyze_refuses_a_crafted_checkpoint(tmp_path, monkeypatch, capsys, payload, form):
    crafted, marker = payload
    path = tmp_path / "model.pt"
    _write_crafted(path, crafted, form)
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", str(path), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and str(path) in err and "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "w").exists()


def test_train_refuses_to_resume_from_a_crafted_checkpoint(tmp_path, tiny_config, capsys, payload):
    crafted, marker = payload
    workdir = tmp_path / "w"
    other = _tiny_spec(tiny_config, seed=8)
    RunStore(store_path(workdir)).register(other)  # an existing store that must stay as it is
    store_bytes = hashlib.sha256(store_path(workdir).read_bytes()).hexdigest()
    spec = _tiny_spec(tiny_config)
    _write_crafted(checkpoint_path(workdir, spec.run_id), crafted, "zip")
    config = tmp_path / "run.yaml"
    config.write_text(spec.model_dump_json())  # JSON is YAML
    assert main(["train", str(config), "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and spec.run_id in err and "Traceback" not in err
    assert not marker.exists()
    assert hashlib.sha256(store_path(workdir).read_bytes()).hexdigest() == store_bytes


def test_python_api_and_sweeps_refuse_a_crafted_checkpoint(tmp_path, tiny_config, payload):
    crafted, marker = payload
    spec = _tiny_spec(tiny_config)
    _write_crafted(checkpoint_path(tmp_path / "api", spec.run_id), crafted, "pickle")
    with pytest.raises(ConfigError, match="refused to load"):
        train_run(spec, workdir=tmp_path / "api")
    with pytest.raises(ConfigError, match="refused to load"):
        load_checkpoint(checkpoint_path(tmp_path / "api", spec.run_id))

    study = Study(name="crafted", base=tiny_config, grid={"train.seed": [7]}, budgets={},
                  arms=[{"name": "sgd", "set": {"train.epochs": 1}}])
    assert [s.run_id for s in study.expand()] == [spec.run_id]
    _write_crafted(checkpoint_path(tmp_path / "sweep", spec.run_id), crafted, "zip")
    summary = sweep(study, tmp_path / "sweep", SerialExecutor())
    assert summary.count("failed") == 1 and "refused to load" in summary.outcomes[0].error
    assert not marker.exists()


def test_dataset_pickles_allow_arrays_and_refuse_everything_else(tmp_path, payload):
    crafted, marker = payload
    images = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    batch = {b"data": images, b"labels": [3, 5]}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    x, y = read_cifar_batch(path)  # a genuine batch still loads, bit for bit
    assert np.array_equal(x.reshape(2, -1), images) and y.tolist() == [3, 5]

    path.write_bytes(pickle.dumps({b"data": crafted, b"labels": [0]}, protocol=2))
    with pytest.raises(UnreadableFile, match=f"{path}: not a CIFAR-10 batch: refusing to load"):
        read_cifar_batch(path)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_array_pickle(io.BytesIO(pickle.dumps(crafted, protocol=4)))
    assert not marker.exists()


UNSAFE_LOADERS = [
    (r"torch\.load\((?![^)]*weights_only=True)", "torch.load without weights_only=True"),
    (r"\bpickle\.loads?\(", "pickle.load"),
    (r"\bpickle\.Unpickler\(", "an unrestricted pickle.Unpickler"),
    (r"allow_pickle\s*=\s*True", "np.load(allow_pickle=True)"),
    (r"\byaml\.(load|unsafe_load|full_load)\(", "yaml.load (not safe_load)"),
    (r"\b(marshal|shelve|dill|cloudpickle|joblib)\.load", "another code-running loader"),
]


def test_the_package_uses_no_unsafe_loader():
    """Every loader in the package is a safe one: weights-only torch.load, safe YAML, and restricted pickles."""
    found = []
    for source in PACKAGE.rglob("*.py"):
        text = source.read_text()
        for pattern, what in UNSAFE_LOADERS:
            found += [f"{source.relative_to(PACKAGE)}:{text[:m.start()].count(chr(10)) + 1}: {what}"
                      for m in re.finditer(pattern, text)]
    assert found == []
    restricted = (PACKAGE / "data" / "safe_pickle.py").read_text()
    assert "def find_class" in restricted and "UnpicklingError" in restricted
