"""Report time for a large study: `build_study_report` end to end on a synthetic mnist-mlp-like store.

The store is written directly with sqlite `executemany` (no training): 5 MLP widths × (SGD + SAM at 5 values of ρ)
× as many seeds as it takes to reach the requested number of runs, each with plausible final metrics. The time
printed covers reading the store, selection, the null and trend statistics, figures and every report file; the
store read and `load_study` (which validates every run of the study) are also timed on their own.

    python benchmarks/bench_report.py [N_RUNS ...]     (default: 6030 and 100000)
"""
from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from samscale.report.study_report import build_study_report
from samscale.spec.run import RunSpec
from samscale.spec.study import Study, load_study
from samscale.store import RunStore
from samscale.workdir import store_path, study_path

SIZES = (0.25, 0.5, 1, 4, 10)
RHOS = (0.01, 0.02, 0.05, 0.1, 0.2)
N_PARAMS = {0.25: 52_000, 0.5: 109_000, 1: 266_000, 4: 1_470_000, 10: 5_130_000}


def study_for(n_seeds: int) -> Study:
    """The mnist-mlp grid with `n_seeds` seeds."""
    return Study(
        name="bench-mnist-mlp",
        base={"data": {"name": "mnist", "val_size": 5000, "augment": False}, "model": {"family": "mlp"},
              "train": {"epochs": 100}},
        grid={"model.size": list(SIZES), "train.seed": list(range(n_seeds))},
        arms=[{"name": "sgd", "set": {"optim.name": "sgd"}},
              {"name": "sam", "set": {"optim.name": "sam"}, "grid": {"optim.rho": list(RHOS)}}],
    )


def write_store(workdir: Path, n_runs: int) -> int:
    """A study.yaml and a store of about `n_runs` complete runs; returns the number written."""
    n_seeds = max(1, round(n_runs / (len(SIZES) * (1 + len(RHOS)))))
    study = study_for(n_seeds)
    study_path(workdir).write_text(study.to_yaml(), encoding="utf-8")
    RunStore(store_path(workdir))  # creates the schema
    template = json.loads(RunSpec.model_validate(study.base).model_dump_json())  # every field, as the store has it
    rng = np.random.default_rng(0)
    runs, links, now = [], [], time.time()
    for size in SIZES:
        for seed in range(n_seeds):
            for name, rho in [("sgd", 0.05), *(("sam", r) for r in RHOS)]:
                spec = json.loads(json.dumps(template))
                spec["model"]["size"], spec["train"]["seed"] = size, seed
                spec["optim"]["name"], spec["optim"]["rho"] = name, rho
                run_id = f"{len(runs):016x}"
                quality = rng.normal(0, 0.0008)
                val, test = 0.98 + quality + rng.normal(0, 0.0006, 2) + (0.002 * rho if name == "sam" else 0)
                final = {"final_train_loss": float(rng.uniform(1e-4, 1e-3)), "final_train_acc": 1.0,
                         "final_val_acc": float(val), "final_val_loss": float(1 - val),
                         "final_test_acc": float(test), "final_test_loss": float(1 - test),
                         "best_epoch": 100, "best_val_acc": float(val), "best_test_acc": float(test),
                         "best_val_loss": float(1 - val), "best_test_loss": float(1 - test),
                         "n_params": N_PARAMS[size], "data_source": "synthetic benchmark rows"}
                runs.append((run_id, json.dumps(spec), "complete", N_PARAMS[size], 100, 1, json.dumps(final),
                             now + len(runs), now))
                links.append((study.name, run_id))
    db = sqlite3.connect(store_path(workdir))
    with db:
        db.executemany("INSERT INTO runs (run_id, spec, status, n_params, epochs_done, attempts, final, created, "
                       "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", runs)
        db.executemany("INSERT INTO study_runs (study, run_id) VALUES (?, ?)", links)
    db.close()
    return len(runs)


def timed(call) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one call (CPU time stays meaningful on a busy shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    counts = [int(a) for a in sys.argv[1:]] or [6030, 100_000]
    print("seconds, wall / CPU of this process")
    print(f"{'runs':>8}{'store read':>18}{'check study':>18}{'report total':>18}")
    print("(check study = load_study with every run validated, as `sweep` does; the report path skips it)")
    for count in counts:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            n = write_store(workdir, count)
            read = timed(lambda: RunStore(store_path(workdir)).runs_frame("bench-mnist-mlp"))
            load = timed(lambda: load_study(study_path(workdir)))
            total = timed(lambda: build_study_report(workdir, command="bench_report"))
            print(f"{n:>8}" + "".join(f"{w:>10.1f} /{c:>6.1f}" for w, c in (read, load, total)), flush=True)


if __name__ == "__main__":
    main()
