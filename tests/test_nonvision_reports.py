"""The non-vision recipes' smoke budgets end to end: `samscale reproduce NAME --budget smoke` trains every run, and
the report names the task's metric and its base optimizer and states SAM's gains over it equal to the finished runs'
numbers in the store."""
from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest

from samscale.cli import main
from samscale.recipes import RECIPES

# recipe → (metric column, its words in the report's headers, scale from stored value to reported value, the base
# optimizer the paper's legend names)
NON_VISION = {
    "atari-dqn": ("test_return", "test return", 1.0, "Adam"),
    "sst2-lstm": ("test_acc", "test acc. (%)", 100.0, "SGD"),
    "graph-gcn": ("test_acc", "test acc. (%)", 100.0, "Adam"),
    "pos-transformer": ("test_acc", "test acc. (%)", 100.0, "AdamW"),
}


def _stored_finals(db_path) -> dict[str, dict]:
    """Each run's final summary read straight from the SQLite file (no samscale code involved)."""
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT run_id, status, final FROM runs").fetchall()
    assert rows and all(status == "complete" for _, status, _ in rows), rows
    return {run_id: json.loads(final) for run_id, _, final in rows}


@pytest.mark.parametrize("name", sorted(NON_VISION))
def test_smoke_budget_reports_gains_in_the_tasks_metric(name, tmp_path):
    if name not in RECIPES:
        pytest.skip(f"{name} is not a recipe of this build")
    if name == "graph-gcn":
        pytest.importorskip("datamol")
    if name == "atari-dqn":
        pytest.importorskip("minatar")
    metric, words, scale, optimizer = NON_VISION[name]
    out = tmp_path / name
    assert main(["reproduce", name, "--budget", "smoke", "--out", str(out), "--executor", "serial"]) == 0
    finals = _stored_finals(out / "samscale.db")
    selected = pd.read_csv(out / "report" / "selected.csv")
    assert len(selected) >= 2  # at least two sizes, each with its chosen SAM run and its base-optimizer run
    for row in selected.itertuples():
        base = finals[row.baseline_run_id][f"final_{metric}"]
        treat = finals[row.treatment_run_id][f"final_{metric}"]
        assert getattr(row, f"baseline_{metric}") == pytest.approx(scale * base)
        assert row.gain == pytest.approx(scale * (treat - base))
    report = (out / "report" / "report.md").read_text()
    assert f"| {optimizer} {words} | SAM {words} |" in report
    head = report.split("## Notes")[0]
    assert "| substitution |" in head and all(
        f"| {other} " not in head for other in {"Adam", "AdamW", "SGD"} - {optimizer})
