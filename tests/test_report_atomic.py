"""Reports are swapped in whole: writers that run at once never share a folder, and each one that finishes leaves a
complete report (the last to finish wins); a folder that is not a report is never replaced."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from samscale.errors import ConfigError
from samscale.report.study_report import replace_folder
from samscale.spec.study import Study
from samscale.sweep.executors import SerialExecutor
from samscale.sweep.sweep import sweep

FILES = [f"part{i}.txt" for i in range(6)] + ["figures/a.svg", "figures/b.svg", "report.html"]


def _slow_writer(name: str):
    """A `write` callback that writes FILES slowly, each holding the writer's name, and returns its page."""
    def write(folder: Path) -> Path:
        for relative in FILES:
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(name)
            time.sleep(0.005)
        return folder / "report.html"
    return write


def test_concurrent_writers_each_succeed_and_leave_one_complete_report(tmp_path):
    target = tmp_path / "report"
    target.mkdir()
    (target / "report.html").write_text("old")
    (target / "stale.png").write_text("old")
    pages, errors = {}, []

    def run(name: str) -> None:
        try:
            pages[name] = replace_folder(target, _slow_writer(name))
        except Exception as err:  # collected: the assertion below names it
            errors.append(err)

    threads = [threading.Thread(target=run, args=(f"writer{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(pages.values()) == {target / "report.html"}
    contents = {str(p.relative_to(target)): p.read_text() for p in target.rglob("*") if p.is_file()}
    assert sorted(contents) == sorted(FILES)  # complete, and the old report's stale file is gone
    assert len(set(contents.values())) == 1  # every file from one writer: no two writers mixed their files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary or set-aside folder left


def test_a_failed_writer_leaves_the_old_report_and_no_debris(tmp_path):
    target = tmp_path / "report"
    replace_folder(target, _slow_writer("first"))

    def broken(folder: Path) -> Path:
        (folder / "report.html").write_text("half")
        raise RuntimeError("rendering failed")

    with pytest.raises(RuntimeError, match="rendering failed"):
        replace_folder(target, broken)
    assert (target / "report.html").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_folder_that_is_not_a_report_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a report folder"):
        replace_folder(tmp_path, _slow_writer("w"))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_two_report_commands_at_once_both_succeed(tiny_config, tmp_path):
    study = Study(name="pair", base={**tiny_config, "train": {**tiny_config["train"], "epochs": 1}},
                  grid={"model.size": [0.25], "train.seed": [0]},
                  arms=[{"name": "sgd", "set": {"optim.name": "sgd"}},
                        {"name": "sam", "set": {"optim.name": "sam", "optim.rho": 0.05}}])
    assert sweep(study, tmp_path, SerialExecutor()).count("complete") == 2
    command = [sys.executable, "-m", "samscale.cli", "report", str(tmp_path)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]
        assert out.decode().strip() == str(tmp_path / "report" / "report.html")
    report = tmp_path / "report"
    assert {"report.html", "report.md", "runs.csv", "summary.csv", "selected.csv"} <= {p.name for p in report.iterdir()}
    assert (report / "figures" / "test_acc_vs_params.svg").is_file()
    assert "pair" in (report / "report.html").read_text()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")]
