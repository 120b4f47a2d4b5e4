"""The cost table against hand-computed numbers, and the cost recipe end to end at its smoke budget."""
import json

import pandas as pd
import pytest

from samscale.cli import main
from samscale.experiments.cost.table import cost_table, keeps_summary


def _frame():
    rows = []
    # (name, epochs, test acc of seed 0 and 1, grad_evals, seconds)
    arms = [("sgd", 10, (0.50, 0.52), 100, 1.0), ("sam", 10, (0.70, 0.72), 200, 2.0),
            ("looksam", 10, (0.67, 0.69), 120, 1.3), ("late_sam", 10, (0.55, 0.57), 150, 1.5),
            ("sgd", 20, (0.48, 0.50), 200, 2.0)]
    for size, n_params, shift in ((1, 1000, 0.0), (2, 4000, 0.05)):
        for name, epochs, accs, evals, seconds in arms:
            for seed, acc in enumerate(accs):
                rows.append({"model.size": size, "n_params": n_params, "train.seed": seed, "optim.name": name,
                             "train.epochs": epochs, "status": "complete", "final_test_acc": acc + shift,
                             "grad_evals": evals, "sequential_grad_evals": evals, "optimizer_seconds": seconds,
                             "optimizer_state_mb": 0.1})
    rows.append(dict(rows[0], status="running", final_test_acc=0.99))  # unfinished runs are left out
    return pd.DataFrame(rows)


def test_cost_table_matches_hand_computed_gains_and_costs():
    table = cost_table(_frame(), base_epochs=10)
    small = table[table["model.size"] == 1].set_index("arm")
    assert list(small.index) == ["sgd", "sam", "late_sam", "looksam", "sgd-matched"]
    assert small.loc["sam", "gain"] == pytest.approx(20.0)  # 71 − 51 points
    assert small.loc["looksam", "gain"] == pytest.approx(17.0)
    assert small.loc["looksam", "share_of_sam_gain"] == pytest.approx(0.85)
    assert bool(small.loc["looksam", "keeps_80pct"]) and not bool(small.loc["late_sam", "keeps_80pct"])
    assert small.loc["looksam", "evals_vs_sam"] == pytest.approx(0.6)
    assert small.loc["looksam", "gain_per_1k_evals"] == pytest.approx(17.0 / 0.12)
    assert small.loc["sgd-matched", "gain"] == pytest.approx(-2.0)
    assert small.loc["late_sam", "seconds_vs_sam"] == pytest.approx(0.75)
    keeps = keeps_summary(table).set_index("arm")
    assert keeps.loc["looksam", "sizes keeping ≥80 % of SAM's gain"] == [1, 2]
    assert keeps.loc["late_sam", "sizes keeping ≥80 % of SAM's gain"] == "none"


@pytest.mark.slow
def test_cost_smoke_recipe_reports_every_arm(tmp_path):
    out = tmp_path / "cost"
    assert main(["reproduce", "cost", "--budget", "smoke", "--out", str(out)]) == 0
    data = json.loads((out / "report" / "cost.json").read_text())
    arms = {row["arm"] for row in data["table"]}
    assert arms == {"sgd", "sam", "looksam", "late_sam", "random_sam", "momentum_sam", "sgd-matched",
                    "momentum_sam-matched"}
    sam = [row for row in data["table"] if row["arm"] == "sam"]
    # 256 images in batches of 128 for 2 epochs: 4 steps, 2 passes each
    assert all(row["grad_evals"] == 8 and row["evals_vs_sam"] == 1 for row in sam)
    assert (out / "report" / "figures" / "cost_gain.png").is_file()
