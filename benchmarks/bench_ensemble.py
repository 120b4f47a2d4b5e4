"""Sweep throughput: the ensemble executor (compatible runs trained as one batched model) vs the local worker pool.

Both executors sweep the same runs into fresh work directories in the same invocation, so the printed ratios compare
like with like on this machine. The grid is the mnist-mlp recipe's cpu budget (SGD and SAM with ρ ∈ {0.05, 0.2},
3 seeds: 9 runs per width) at widths 0.25, 0.5 and 1, with a reduced training set and epoch count (arguments:
TRAIN_SUBSET EPOCHS, default 12800 1). The first table is per width with both executors at their defaults
(processes = cores); the second varies the pack size K at width 0.25 with the ensemble in one process using every
core, which shows how much of the gain comes from packing itself. The third table repeats the comparison on
MNIST-1D (40 input features), where a step's matrix products are tiny and per-step overhead dominates.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from samscale.recipes import RECIPES
from samscale.sweep.ensemble import EnsembleExecutor
from samscale.sweep.executors import LocalPoolExecutor, SerialExecutor, default_pool_shape, make_executor
from samscale.sweep.sweep import sweep


def timed_sweep(study, executor) -> tuple[float, int]:
    """Seconds and number of runs of one sweep into a fresh work directory."""
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        summary = sweep(study, Path(workdir), executor)
        seconds = time.perf_counter() - started
        failed = [o for o in summary.outcomes if o.status != "complete"]
        if failed:
            raise RuntimeError(f"{len(failed)} runs did not complete: {failed[0].error or failed[0].status}")
        return seconds, len(summary.outcomes)


def study_at(width: float, train_subset: int, epochs: int):
    """The mnist-mlp cpu-budget grid at one width, on `train_subset` training images for `epochs` epochs."""
    cpu = RECIPES["mnist-mlp"].study("cpu")
    base = {**cpu.base, "data": {**cpu.base["data"], "train_subset": train_subset},
            "train": {**cpu.base["train"], "epochs": epochs}}
    return cpu.model_copy(update={"base": base, "grid": {"model.size": [width], "train.seed": [0, 1, 2]}})


def main() -> None:
    train_subset, epochs = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (12800, 1)
    cpus = len(os.sched_getaffinity(0))
    workers, threads = default_pool_shape(cpus)
    print(f"{cpus} CPUs; load average {os.getloadavg()[0]:.1f}; mnist-mlp cpu grid, {train_subset} training images, "
          f"{epochs} epoch(s); pool = {workers} workers × {threads} thread(s)")
    print(f"{'width':<8}{'runs':>6}{'pool runs/h':>14}{'ensemble runs/h':>18}{'ensemble/pool':>15}{'load':>7}")
    for width in (0.25, 0.5, 1):
        study = study_at(width, train_subset, epochs)
        pool_s, n = timed_sweep(study, LocalPoolExecutor(workers, threads))
        ensemble_s, _ = timed_sweep(study, make_executor("ensemble"))
        print(f"{width:<8}{n:>6}{3600 * n / pool_s:>14.0f}{3600 * n / ensemble_s:>18.0f}{pool_s / ensemble_s:>15.2f}"
              f"{os.getloadavg()[0]:>7.1f}", flush=True)
    print(f"\nwidth 0.25, ensemble in one process with {cpus} threads, packs of K runs (pool as above)")
    print(f"{'K':<8}{'runs':>6}{'pool runs/h':>14}{'ensemble runs/h':>18}{'ensemble/pool':>15}{'load':>7}")
    study = study_at(0.25, train_subset, epochs)
    pool_s, n = timed_sweep(study, LocalPoolExecutor(workers, threads))
    for k in (3, 9):
        ensemble_s, _ = timed_sweep(study, EnsembleExecutor(SerialExecutor(), workers=1, threads=cpus, max_members=k))
        print(f"{k:<8}{n:>6}{3600 * n / pool_s:>14.0f}{3600 * n / ensemble_s:>18.0f}{pool_s / ensemble_s:>15.2f}"
              f"{os.getloadavg()[0]:>7.1f}", flush=True)
    print("\nsmall inputs (per-step overhead dominates): MNIST-1D (40 features), 9 runs per width, 2 epochs")
    print(f"{'width':<8}{'runs':>6}{'pool runs/h':>14}{'ensemble runs/h':>18}{'ensemble/pool':>15}{'load':>7}")
    for width in (0.25, 1):
        study = small_study(width)
        pool_s, n = timed_sweep(study, LocalPoolExecutor(workers, threads))
        ensemble_s, _ = timed_sweep(study, make_executor("ensemble"))
        print(f"{width:<8}{n:>6}{3600 * n / pool_s:>14.0f}{3600 * n / ensemble_s:>18.0f}{pool_s / ensemble_s:>15.2f}"
              f"{os.getloadavg()[0]:>7.1f}", flush=True)


def small_study(width: float):
    """The same arms and seeds on MNIST-1D: tiny matrix products, so each step costs mostly overhead."""
    cpu = RECIPES["mnist-mlp"].study("cpu")
    base = {**cpu.base, "data": {"name": "mnist1d", "val_size": 500, "augment": False},
            "train": {**cpu.base["train"], "epochs": 2}}
    return cpu.model_copy(update={"base": base, "grid": {"model.size": [width], "train.seed": [0, 1, 2]}})


if __name__ == "__main__":
    main()
