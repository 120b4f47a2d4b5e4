"""The `cost` recipe: sweep SGD, SAM and the cheap SAM variants (also at SAM's gradient budget), then report the
gain against gradient evaluations, the gain per gradient evaluation and the wall-clock of every arm.

The runs go through the ordinary resumable sweep into `out` (study.yaml, run store, checkpoints); the page is written
to `out/report` (swapped in whole) with `cost.json` holding every number it shows.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from samscale.experiments.common import Progress, write_json
from samscale.experiments.cost.table import KEEP, cost_table, keeps_summary
from samscale.experiments.stability.report import ReportSection, write_pages
from samscale.report.figures import COLORS, Plot, new_figure
from samscale.report.study_report import replace_folder
from samscale.spec.study import Study
from samscale.store import RunStore
from samscale.sweep.executors import make_executor
from samscale.sweep.sweep import sweep
from samscale.workdir import store_path

TITLE = "samscale — SAM's gain at a fraction of its cost"


def run_cost(study: Study, out: str | Path, *, command: str, executor_kind: str = "local",
             on_progress: Progress | None = None) -> Path:
    """Sweep the cost study into `out` and write its page to `out/report`; returns the page's path."""
    out = Path(out)
    progress = on_progress or (lambda line: None)
    started = time.perf_counter()
    sweep(study, out, make_executor(executor_kind), on_result=lambda outcome, done, total: progress(
        f"{done}/{total} runs: {outcome.status}: {outcome.label}"))
    seconds = time.perf_counter() - started
    return write_cost_report(out, study, command=command, sweep_seconds=seconds)


def write_cost_report(out: str | Path, study: Study, *, command: str, sweep_seconds: float | None = None) -> Path:
    """The page of a swept cost study (rebuildable from its store at any time)."""
    out = Path(out)
    frame = RunStore(store_path(out)).runs_frame(study.name)
    base_epochs = int(study.selection.baseline.get("train.epochs", study.expand()[0].train.epochs))
    table = cost_table(frame, base_epochs)
    keeps = keeps_summary(table)
    header = {"command": command, "study": study.name, "budget": study.budget or "(custom)",
              "base epochs": str(base_epochs),
              "sweep wall time": f"{sweep_seconds:.0f} s" if sweep_seconds is not None else "(report rebuilt)"}
    notes = [study.description.strip() if study.description else "",
             "gain: seed-mean final test accuracy minus SGD's at the base epochs, in points; share of SAM's gain: "
             "gain / SAM's gain at that size; grad evals: forward–backward passes over a mini-batch, whole run; "
             "wall time: seconds of training steps (no evaluation), measured on a shared machine, so only rough; "
             f"a variant keeps SAM's gain at a size when its share is ≥ {KEEP:.0%}. Means over seeds only; no "
             "interval is printed (2–3 seeds)."]
    sections = [
        ReportSection("Which variants keep SAM's gain, at what cost",
                      f"Per arm: the sizes where it keeps ≥ {KEEP:.0%} of SAM's gain, and its gradient evaluations "
                      "and wall time as shares of SAM's.", keeps),
        ReportSection("Gain against gradient evaluations", "One row per (size, arm); -matched arms trained for "
                      "SAM's gradient-evaluation budget in epochs.", table, [gain_plot(table)]),
    ]
    payload = {"title": TITLE, "header": header, "notes": notes, "table": table.to_dict(orient="records"),
               "keeps": keeps.to_dict(orient="records")}

    def write(folder: Path) -> Path:
        write_json(folder / "cost.json", payload)
        return write_pages(folder, title=TITLE, header=header, notes=[n for n in notes if n], sections=sections)

    return replace_folder(out / "report", write)


def gain_plot(table: pd.DataFrame) -> Plot:
    """One panel per size: each arm's gain over SGD against its gradient evaluations; -matched arms hollow."""
    sizes = list(dict.fromkeys(table["model.size"]))
    fig = new_figure(len(sizes), 1)
    names = sorted({arm.removesuffix("-matched") for arm in table["arm"]})
    color = {name: COLORS[i % len(COLORS)] for i, name in enumerate(names)}
    for i, size in enumerate(sizes):
        ax = fig.add_subplot(1, len(sizes), i + 1)
        rows = table[table["model.size"] == size]
        for _, row in rows.iterrows():
            name = row["arm"].removesuffix("-matched")
            matched = row["arm"].endswith("-matched")
            ax.scatter(row["grad_evals"], row["gain"], color=color[name] if not matched else "none",
                       edgecolors=color[name], label=name if not matched else None, zorder=3)
        ax.axhline(0, color="0.6", linewidth=0.8)
        sam_gain = float(rows.loc[rows["arm"] == "sam", "gain"].iloc[0])
        ax.axhline(KEEP * sam_gain, color="0.6", linewidth=0.8, linestyle=":")
        ax.set_xlabel("gradient evaluations (forward–backward passes)")
        ax.set_ylabel("test-accuracy gain over SGD (points)")
        n_params = int(rows["n_params"].iloc[0])
        ax.set_title(f"size {size} ({n_params:,} params); dotted: {KEEP:.0%} of SAM's gain", fontsize=8)
        if i == 0:
            ax.legend(fontsize=6)
    return Plot("cost_gain", "gain against gradient evaluations", fig, table)
