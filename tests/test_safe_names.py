"""Names never become paths unchecked: study, arm and analysis names with traversal (`..`), absolute paths,
separators or NUL are refused with a clear message at every entry point (study YAML, CLI flags, names stored in the
run store), and nothing is written outside the work directory."""
from __future__ import annotations

import copy
import sqlite3
from pathlib import Path

import pytest
import yaml

from conftest import TINY
from samscale.cli import main
from samscale.errors import ConfigError
from samscale.names import check_name
from samscale.report.figures import Plot, save_plot
from samscale.report.study_report import build_study_report
from samscale.spec.study import Study, load_study
from samscale.store import RunStore
from samscale.sweep.executors import SerialExecutor
from samscale.sweep.sweep import sweep
from samscale.workdir import store_path

GOOD = ["mnist-mlp", "label_noise.v2", "a", "A-1_b.c", "x" * 100]


def _bad(tmp_path: Path) -> dict[str, str]:
    """Unsafe names (id → name), with where each would lead as a path."""
    return {"dotdot": "..", "parent": "../x", "absolute": str(tmp_path / "outside" / "pwn"), "separator": "a/b",
            "backslash": "a\\b", "nul": "a\x00b", "hidden": ".x", "empty": "", "long": "x" * 101, "space": "a b"}


def test_safe_names_are_letters_digits_and_dash_underscore_dot(tmp_path):
    for name in GOOD:
        assert check_name(name) == name
    for key, name in _bad(tmp_path).items():
        with pytest.raises(ConfigError, match=r"study name .* \(letters, digits and '-_.' only") as info:
            check_name(name, "study name")
        assert repr(name) in str(info.value), key
    with pytest.raises(ConfigError, match="is 101 characters long; at most 100"):
        check_name("x" * 101)
    with pytest.raises(ConfigError, match="must not start with '.'"):
        check_name("..")


def _study_dict(name: str = "ok", arm: str = "sgd") -> dict:
    base = copy.deepcopy(TINY)
    base["train"]["epochs"] = 1
    return {"name": name, "base": base, "grid": {"train.seed": [0]},
            "arms": [{"name": arm, "set": {"optim.name": "sgd"}}, {"name": "sam", "set": {"optim.name": "sam"}}]}


@pytest.mark.parametrize("field", ["study", "arm"])
def test_unsafe_study_and_arm_names_are_refused_by_the_study_yaml_and_the_cli(tmp_path, monkeypatch, capsys, field):
    monkeypatch.chdir(tmp_path)
    for key, name in _bad(tmp_path).items():
        data = _study_dict(name=name) if field == "study" else _study_dict(arm=name)
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError, match=f"{'name' if field == 'study' else 'arms.0.name'}: name "):
            load_study(path)
        with pytest.raises(ValueError):
            Study.model_validate(data)
        assert main(["sweep", str(path), "--executor", "serial"]) == 2  # default work directory: runs/NAME
        err = capsys.readouterr().err
        assert "letters, digits and '-_.' only" in err and "Traceback" not in err, (key, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{key}.yaml" for key in _bad(tmp_path))


def test_unsafe_study_names_on_the_command_line_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(_study_dict()["base"]))
    for key, name in _bad(tmp_path).items():
        for argv in (["train", "run.yaml", "--workdir", "w", "--study", name],
                     ["runs", "--workdir", "w", "--study", name]):
            assert main(argv) == 2, (key, argv)
            err = capsys.readouterr().err
            assert "--study" in err and "letters, digits and '-_.' only" in err, (key, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]  # no store, no folder


def test_a_crafted_analysis_name_in_the_store_never_becomes_a_file_name(tmp_path):
    workdir = tmp_path / "w"
    study = Study.model_validate(_study_dict(name="names"))
    assert sweep(study, workdir, SerialExecutor()).count("complete") == 2
    outside = tmp_path / "outside"
    outside.mkdir()
    crafted = str(outside / "pwn")
    store = RunStore(store_path(workdir))
    with pytest.raises(ConfigError, match="analysis name"):
        store.record_analysis(store.runs_frame()["run_id"][0], crafted, 1.0)  # refused when written ...
    with pytest.raises(ConfigError, match="study name"):
        store.register_study(study.expand(), "../x")
    with sqlite3.connect(store_path(workdir)) as db:  # ... and when read from a store written by something else
        db.executemany("INSERT INTO analysis (run_id, name, value) VALUES (?, ?, ?)",
                       [(run_id, crafted, "1.0") for run_id in store.runs_frame()["run_id"]])
    db.close()
    with pytest.raises(ConfigError, match=f"analysis name \\(read from the run store\\) '{crafted}' holds '/'"):
        build_study_report(workdir, command="samscale report w")
    assert list(outside.iterdir()) == []
    assert not (workdir / "report").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "w"]


def test_figures_are_saved_only_under_safe_names(tmp_path):
    from matplotlib.figure import Figure

    for name in ("../escape", str(tmp_path / "abs"), "a/b"):
        with pytest.raises(ConfigError, match="figure name"):
            save_plot(Plot(name, "title", Figure(), None), tmp_path / "figures")
    assert list(tmp_path.iterdir()) == []
