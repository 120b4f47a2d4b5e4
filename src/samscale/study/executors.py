"""Executors run many RunSpecs: in this process, in a pool of local worker processes, or on a Ray cluster.

Every executor takes RunSpecs and yields a `RunOutcome` per run as runs finish. Local workers claim and write their
runs in the shared SQLite store themselves; Ray workers only train (and checkpoint) and the driver writes the store.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from samscale.study.spec import RunSpec
from samscale.study.store import RunStore


@dataclass
class RunOutcome:
    """How one run of a sweep ended: complete, diverged, failed, or busy (held by another live sweep)."""

    run_id: str
    label: str
    status: str
    error: str | None = None
    final: dict | None = None


def execute_run(spec_json: str, store_path: str | None, workdir: str, threads: int | None) -> RunOutcome:
    """Claim, train and record one run; any exception becomes a `failed` record instead of ending the sweep."""
    import torch

    from samscale.train.loop import train_run

    spec = RunSpec.model_validate_json(spec_json)
    if threads:
        torch.set_num_threads(threads)
    store = RunStore(store_path) if store_path else None
    if store is not None and not store.claim(spec.run_id):
        status = store.status(spec.run_id) or "busy"
        return RunOutcome(spec.run_id, spec.label(), status if status in ("complete", "diverged") else "busy")
    try:
        result = train_run(spec, store=store, workdir=workdir)
    except Exception:  # isolate failures: the sweep records it and goes on
        error = traceback.format_exc()
        if store is not None:
            store.finish(spec.run_id, "failed", error=error)
        return RunOutcome(spec.run_id, spec.label(), "failed", error=error)
    return RunOutcome(spec.run_id, spec.label(), result.status, final=result.final)


def _die_with_parent() -> None:
    """Worker initializer: on Linux, ask the kernel to kill this worker when the sweep process dies."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _worker_init(threads: int) -> None:
    _die_with_parent()
    import torch

    torch.set_num_threads(threads)


def default_pool_shape(cpus: int | None = None, small_models: bool = True) -> tuple[int, int]:
    """(workers, threads per worker) for this machine: one thread per worker for small models, else one worker."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return (cpus, 1) if small_models else (1, cpus)


class SerialExecutor:
    """Runs one run after another in this process (the baseline; also the simplest to debug)."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def run(self, specs: list[RunSpec], store_path: str, workdir: str) -> Iterator[RunOutcome]:
        for spec in specs:
            yield execute_run(spec.model_dump_json(), store_path, workdir, self.threads)


class LocalPoolExecutor:
    """A pool of `workers` spawned processes with `threads` torch threads each; workers die with the sweep."""

    def __init__(self, workers: int, threads: int = 1):
        if workers < 1 or threads < 1:
            raise ValueError(f"workers and threads must be >= 1, got workers={workers}, threads={threads}")
        self.workers = workers
        self.threads = threads

    def run(self, specs: list[RunSpec], store_path: str, workdir: str) -> Iterator[RunOutcome]:
        context = mp.get_context("spawn")
        with ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_worker_init, initargs=(self.threads,)
        ) as pool:
            pending: set[Future] = {
                pool.submit(execute_run, spec.model_dump_json(), store_path, workdir, self.threads) for spec in specs
            }
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()


class RayExecutor:
    """Runs each spec as a Ray task with the given CPUs/GPUs; the driver alone writes the store.

    Checkpoints go to `workdir`, which must be visible to every node (a shared filesystem) for resume to work.
    """

    def __init__(self, address: str | None = None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0,
                 init_kwargs: dict | None = None):
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.init_kwargs = init_kwargs or {}

    def run(self, specs: list[RunSpec], store_path: str, workdir: str) -> Iterator[RunOutcome]:
        try:
            import ray
        except ImportError as err:
            raise RuntimeError("the Ray executor needs the optional extra: pip install 'samscale[ray]'") from err
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_kwargs)
        store = RunStore(store_path)
        threads = max(1, int(self.cpus_per_run))
        remote = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run)(_ray_train)
        refs = {}
        for spec in specs:
            if store.claim(spec.run_id):
                refs[remote.remote(spec.model_dump_json(), workdir, threads)] = spec
            else:
                yield RunOutcome(spec.run_id, spec.label(), "busy")
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            spec = refs.pop(done[0])
            try:
                status, final, history, n_params = ray.get(done[0])
            except Exception as err:  # a task that raised: record and go on
                store.finish(spec.run_id, "failed", error=str(err))
                yield RunOutcome(spec.run_id, spec.label(), "failed", error=str(err))
                continue
            store.register(spec, n_params=n_params)
            for row in history:
                store.record_epoch(spec.run_id, int(row["epoch"]), row)
            store.finish(spec.run_id, status, final)
            yield RunOutcome(spec.run_id, spec.label(), status, final=final)


def _ray_train(spec_json: str, workdir: str, threads: int) -> tuple[str, dict, list[dict], int | None]:
    """Ray task body: train without touching the store; return everything the driver records."""
    import torch

    from samscale.train.loop import train_run

    torch.set_num_threads(threads)
    result = train_run(RunSpec.model_validate_json(spec_json), workdir=workdir)
    return result.status, result.final, result.history, result.final.get("n_params")


def make_executor(kind: str, *, workers: int | None = None, threads: int | None = None,
                  address: str | None = None, gpus_per_run: float = 0.0):
    """Executor by name: 'serial', 'local' (process pool sized to the machine by default) or 'ray'."""
    if kind == "serial":
        return SerialExecutor(threads)
    if kind == "local":
        default_workers, default_threads = default_pool_shape()
        return LocalPoolExecutor(workers or default_workers, threads or default_threads)
    if kind == "ray":
        return RayExecutor(address, cpus_per_run=float(threads or 1), gpus_per_run=gpus_per_run)
    raise ValueError(f"unknown executor {kind!r}; valid: serial, local, ray")


def store_path_in(workdir: str | Path) -> Path:
    """The store file of a sweep's work directory."""
    return Path(workdir) / "samscale.db"
