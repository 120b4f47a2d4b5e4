"""Sweep throughput: the ensemble executor (compatible runs trained as one batched model) vs the local worker pool.

Both executors sweep the same runs into fresh work directories in the same invocation, so the printed ratios compare
like with like on this machine. The grid is the mnist-mlp recipe's cpu budget (SGD and SAM with ρ ∈ {0.05, 0.2},
3 seeds: 9 runs per width) at widths 0.25, 0.5 and 1, with a reduced training set and epoch count (arguments:
TRAIN_SUBSET EPOCHS, default 12800 1). The first table is end to end, per width, with both executors at their
defaults (processes = cores; process start-up and imports included). The second measures packing itself: in one
warmed-up process with one thread, the same runs one after another (`train_run`) vs in packs of K, on MNIST and on
MNIST-1D (40 input features, where a step's matrix products are tiny and per-step overhead dominates).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from samscale.recipes import RECIPES
from samscale.sweep.ensemble import EnsembleExecutor
from samscale.sweep.executors import LocalPoolExecutor, SerialExecutor, default_pool_shape, make_executor
from samscale.sweep.sweep import sweep
from samscale.train.loop import dataset_for


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
    """Arguments: [TRAIN_SUBSET EPOCHS [TABLE]], TABLE one of end-to-end, per-core (default: both)."""
    train_subset, epochs = (int(sys.argv[1]), int(sys.argv[2])) if len(sys.argv) > 2 else (12800, 1)
    tables = sys.argv[3:] or ["end-to-end", "per-core"]
    if "end-to-end" in tables:
        end_to_end(train_subset, epochs)
    if "per-core" in tables:
        per_core(train_subset, epochs)


def end_to_end(train_subset: int, epochs: int) -> None:
    """Pool vs ensemble executor at their defaults, per width."""
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


def per_core(train_subset: int, epochs: int) -> None:
    """One process, one thread, imports and data loaded beforehand: train_run one by one vs packs of K."""
    print(f"\nper core, in one warmed-up process with 1 thread (no process start-up or imports counted): "
          "one run after another (train_run) vs packs of K runs")
    print(f"{'data':<10}{'width':<8}{'K':>4}{'runs':>6}{'serial runs/h':>15}{'ensemble runs/h':>17}{'ratio':>8}"
          f"{'load':>7}")
    torch.set_num_threads(1)
    timed_sweep(small_study(0.25, epochs=1), EnsembleExecutor(SerialExecutor(), threads=1))  # imports, warm-up
    cases = [("mnist", w, k, study_at(w, train_subset, epochs)) for w, k in ((0.25, 3), (0.25, 9), (1, 9))]
    cases += [("mnist1d", w, 9, small_study(w)) for w in (0.25, 1)]
    for *_, study in cases:
        dataset_for(study.expand()[0])  # loaded (and cached) before timing
    for data, width, k, study in cases:
        serial_s, n = timed_sweep(study, SerialExecutor(threads=1))
        ensemble_s, _ = timed_sweep(study, EnsembleExecutor(SerialExecutor(), threads=1, max_members=k))
        print(f"{data:<10}{width:<8}{k:>4}{n:>6}{3600 * n / serial_s:>15.0f}{3600 * n / ensemble_s:>17.0f}"
              f"{serial_s / ensemble_s:>8.2f}{os.getloadavg()[0]:>7.1f}", flush=True)


def small_study(width: float, epochs: int = 2):
    """The same arms and seeds on MNIST-1D (40 features): tiny matrix products, so each step is mostly overhead."""
    cpu = RECIPES["mnist-mlp"].study("cpu")
    base = {**cpu.base, "data": {"name": "mnist1d", "val_size": 500, "augment": False},
            "train": {**cpu.base["train"], "epochs": epochs}}
    return cpu.model_copy(update={"base": base, "grid": {"model.size": [width], "train.seed": [0, 1, 2]}})


if __name__ == "__main__":
    main()
