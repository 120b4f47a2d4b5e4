"""A study's report, `samscale runs` on its folder and its selection read exactly the runs its current grid expands
to, however many other runs the work directory's store holds."""
from __future__ import annotations

import pandas as pd
import pytest

from samscale.cli import main
from samscale.report.study_report import build_study_report
from samscale.spec.study import Study
from samscale.store import RunStore
from samscale.workdir import store_path, study_path

BASE = {"data": {"name": "mnist1d", "train_subset": 384, "val_size": 128, "augment": False},
        "model": {"family": "mlp"}, "train": {"epochs": 1}}


def make_study(rhos: list[float]) -> Study:
    return Study.model_validate({
        "name": "shrink", "base": BASE,
        "grid": {"model.size": [0.25, 1], "train.seed": [0, 1]},
        "arms": [{"name": "sgd", "set": {"optim.name": "sgd"}},
                 {"name": "sam", "set": {"optim.name": "sam"}, "grid": {"optim.rho": rhos}}],
    })


def swept(workdir, study: Study) -> None:
    """What a sweep leaves behind, with made-up metrics: SAM at ρ = 0.5 is best on validation at every size."""
    store = RunStore(store_path(workdir))
    specs = study.expand()
    store.register_study(specs, study.name)
    for spec in specs:
        store.register(spec, study.name, n_params=1000 if spec.model.size == 0.25 else 10_000)
        val = {"sgd": 0.80, 0.05: 0.82, 0.5: 0.90}[spec.optim.name if spec.optim.name == "sgd" else spec.optim.rho]
        store.finish(store.claim(spec.run_id), "complete", {"final_val_acc": val, "final_test_acc": val - 0.01,
                                               "final_train_loss": 0.1})
    study_path(workdir).write_text(study.to_yaml())


def test_report_after_the_grid_shrank_shows_only_the_current_grid(tmp_path, capsys):
    swept(tmp_path, make_study([0.05, 0.5]))
    shrunk = make_study([0.05])
    study_path(tmp_path).write_text(shrunk.to_yaml())  # the user drops ρ = 0.5 and reports again
    page = build_study_report(tmp_path, command="samscale report")
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert summary["rho_star"].tolist() == [0.05, 0.05]  # never 0.5, which the study no longer has
    assert summary["gain_mean"].tolist() == pytest.approx([2.0, 2.0])  # 82 − 80 points
    text = page.read_text()
    assert "8 of 8 runs complete" in text
    assert "4 other runs in the store (not in the study&#x27;s current grid) left out" in text
    assert len(pd.read_csv(tmp_path / "report" / "runs.csv")) == 8
    selected = pd.read_csv(tmp_path / "report" / "selected.csv")
    assert set(selected["treatment_run_id"]) <= {s.run_id for s in shrunk.expand()}

    capsys.readouterr()
    assert main(["runs", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "study 'shrink': 8 runs; 4 other runs in the store" in out
    assert sum(line.split()[0] in {s.run_id for s in shrunk.expand()} for line in out.splitlines()[2:]) == 8


def test_a_grown_grid_counts_the_runs_not_yet_swept(tmp_path):
    from samscale.selection.scope import study_runs

    swept(tmp_path, make_study([0.05]))
    grown = make_study([0.05, 0.5])
    store = RunStore(store_path(tmp_path))
    scoped = study_runs(store.runs_frame("shrink"), grown, store_total=len(store.statuses()))
    assert (len(scoped.frame), scoped.left_out, scoped.not_registered) == (8, 0, 4)
    assert scoped.header() == ("0 other runs in the store (not in the study's current grid) left out; 4 runs of "
                               "the study not in the store yet (sweep again)")
