"""Sweep throughput: the local worker pool vs the same runs one after another in one process.

Both sweeps run the same grid into fresh work directories in the same invocation, so the printed ratio compares
like with like on this machine. Grids: the mnist-mlp recipe at its smoke budget (seconds of work: worker start-up
dominates) and its cpu budget cut to the three smallest widths and one seed (2 epochs on 55k images per run).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from samscale.recipes import RECIPES
from samscale.sweep.executors import LocalPoolExecutor, SerialExecutor, default_pool_shape
from samscale.sweep.sweep import sweep


def timed_sweep(study, executor) -> tuple[float, int]:
    """Seconds and number of runs of one sweep into a fresh work directory."""
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        summary = sweep(study, Path(workdir), executor)
        return time.perf_counter() - started, len(summary.outcomes)


def main() -> None:
    cpus = len(os.sched_getaffinity(0))
    workers, threads = default_pool_shape(cpus)
    smoke = RECIPES["mnist-mlp"].study("smoke")
    cpu = RECIPES["mnist-mlp"].study("cpu")
    cpu_cut = cpu.model_copy(update={"grid": {"model.size": [0.25, 0.5, 1], "train.seed": [0]}})
    print(f"{cpus} CPUs; pool = {workers} workers × {threads} thread(s); serial = 1 process × {cpus} threads")
    print(f"{'grid':<28}{'runs':>6}{'serial runs/min':>18}{'pool runs/min':>16}{'pool/serial':>13}")
    for name, study in (("mnist-mlp smoke", smoke), ("mnist-mlp cpu, 3 sizes", cpu_cut)):
        torch.set_num_threads(cpus)
        serial_s, n = timed_sweep(study, SerialExecutor(threads=cpus))
        pool_s, _ = timed_sweep(study, LocalPoolExecutor(workers, threads))
        print(f"{name:<28}{n:>6}{60 * n / serial_s:>18.1f}{60 * n / pool_s:>16.1f}{serial_s / pool_s:>13.2f}")


if __name__ == "__main__":
    main()
