"""Executors run many RunSpecs: in this process, in a pool of local worker processes, or on a Ray cluster.

Every executor takes RunSpecs and yields a `RunOutcome` per run as runs finish. Executors are the only writers of the
store, always through `StoreRecorder`: local workers claim their runs and record events as they happen; Ray workers
only train (and checkpoint), and the driver claims, beats the heartbeat and replays each run's events.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Iterator

from samscale.spec.run import RunSpec
from samscale.spec.status import FINISHED, RunStatus
from samscale.store import RunStore
from samscale.sweep.recorder import Heartbeat, RunOutcome, StoreRecorder  # RunOutcome: re-exported
from samscale.sweep.gpus import DEFAULT_RUNS_PER_GPU, plan_gpu_slots, pool_initializer, uses_gpu, visible_gpus
from samscale.train.events import EventHandler, RunEvent
from samscale.train.loop import train_run


def execute_run(spec_json: str, store_path: str, workdir: str, threads: int | None,
                on_event: EventHandler | None = None) -> RunOutcome:
    """Claim, train and record one run; any exception becomes a `failed` record instead of ending the sweep.

    `on_event` also receives the trainer's events (after they are recorded), e.g. to print progress.
    """
    spec = RunSpec.model_validate_json(spec_json)
    if threads:
        spec = spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"threads": threads})})
    store = RunStore(store_path)
    if not store.claim(spec.run_id):
        status = store.status(spec.run_id)
        return RunOutcome(spec.run_id, spec.label(), status if status in FINISHED else RunStatus.BUSY.value)
    recorder = StoreRecorder(store)

    def handle(event: RunEvent) -> None:
        recorder(event)
        if on_event is not None:
            on_event(event)

    try:
        with Heartbeat(store, [spec.run_id]):
            result = train_run(spec, workdir=workdir, on_event=handle)
    except Exception:  # isolate failures: the sweep records it and goes on
        error = traceback.format_exc()
        recorder.failed(spec.run_id, error)
        return RunOutcome(spec.run_id, spec.label(), RunStatus.FAILED.value, error=error)
    return RunOutcome(spec.run_id, spec.label(), str(result.status), final=result.final)


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
    """A pool of `workers` spawned processes with `threads` torch threads each; workers die with the sweep. With
    `gpu_slots` (`samscale.sweep.gpus`), worker i sees only the GPUs of one slot (at most one worker per slot)."""

    def __init__(self, workers: int, threads: int = 1, gpu_slots: list[tuple[str, ...]] | None = None):
        if workers < 1 or threads < 1:
            raise ValueError(f"workers and threads must be >= 1, got workers={workers}, threads={threads}")
        self.gpu_slots = list(gpu_slots or [])
        self.workers = workers
        self.threads = threads

    def run(self, specs: list[RunSpec], store_path: str, workdir: str) -> Iterator[RunOutcome]:
        context = mp.get_context("spawn")
        slots = self.gpu_slots if uses_gpu([spec.runtime.device for spec in specs]) else []
        initializer, initargs = pool_initializer(slots, self.threads, os.getpid(), context)
        workers = min(self.workers, len(slots)) if slots else self.workers
        with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs) as pool:
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

    runs_here = False  # devices and data are the workers' own: the driver does not preflight them

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
        recorder = StoreRecorder(store)
        threads = max(1, int(self.cpus_per_run))
        remote = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run)(_ray_train)
        refs = {}
        with Heartbeat(store) as heartbeat:
            for spec in specs:
                if store.claim(spec.run_id):
                    heartbeat.hold(spec.run_id)
                    refs[remote.remote(spec.model_dump_json(), workdir, threads)] = spec
                else:
                    yield RunOutcome(spec.run_id, spec.label(), RunStatus.BUSY.value)
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                spec = refs.pop(done[0])
                heartbeat.release(spec.run_id)
                try:
                    events, status, final = ray.get(done[0])
                except Exception as err:  # a task that raised: record and go on
                    recorder.failed(spec.run_id, str(err))
                    yield RunOutcome(spec.run_id, spec.label(), RunStatus.FAILED.value, error=str(err))
                    continue
                recorder.replay(events)
                yield RunOutcome(spec.run_id, spec.label(), status, final=final)


def _pool_shape(slots: list[tuple[str, ...]]) -> tuple[int, int]:
    """(workers, threads) by default: one worker per GPU slot sharing the cores, else `default_pool_shape()`."""
    if not slots:
        return default_pool_shape()
    cpus = default_pool_shape()[0]
    return len(slots), max(1, cpus // len(slots))


def _ray_train(spec_json: str, workdir: str, threads: int) -> tuple[list[RunEvent], str, dict]:
    """Ray task body: train without touching the store; return the run's events for the driver to record."""
    spec = RunSpec.model_validate_json(spec_json)
    spec = spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"threads": threads})})
    events: list[RunEvent] = []
    result = train_run(spec, workdir=workdir, on_event=events.append)
    return events, str(result.status), result.final


def make_executor(kind: str, *, workers: int | None = None, threads: int | None = None,
                  address: str | None = None, gpus_per_run: float = 0.0, runs_per_gpu: int = DEFAULT_RUNS_PER_GPU):
    """Executor by name: 'serial', 'local' (process pool sized to the machine by default), 'ray', or 'ensemble'
    (compatible runs packed and trained as batched models by a pool of `workers` processes, one pack each; runs
    that cannot be packed go to a local pool). On a host with GPUs the local and ensemble pools get one worker per
    GPU slot by default (`samscale.sweep.gpus`: `gpus_per_run` GPUs each, `runs_per_gpu` workers per GPU)."""
    if kind == "ensemble":
        from samscale.sweep.ensemble import DEFAULT_MAX_PACK_PARAMS, EnsembleExecutor
        from samscale.sweep.gpus import pack_param_budget

        slots = plan_gpu_slots(visible_gpus(), gpus_per_run, runs_per_gpu)
        default_workers, default_threads = _pool_shape(slots)
        fallback = make_executor("local", workers=workers, threads=threads, gpus_per_run=gpus_per_run,
                                 runs_per_gpu=runs_per_gpu)
        return EnsembleExecutor(fallback, workers=workers or default_workers, threads=threads or default_threads,
                                gpu_slots=slots,
                                max_pack_params=pack_param_budget(DEFAULT_MAX_PACK_PARAMS, slots,
                                                                  runs_per_gpu=runs_per_gpu))
    if kind == "serial":
        return SerialExecutor(threads)
    if kind == "local":
        slots = plan_gpu_slots(visible_gpus(), gpus_per_run, runs_per_gpu)
        default_workers, default_threads = _pool_shape(slots)
        return LocalPoolExecutor(workers or default_workers, threads or default_threads, gpu_slots=slots)
    if kind == "ray":
        return RayExecutor(address, cpus_per_run=float(threads or 1), gpus_per_run=gpus_per_run)
    raise ValueError(f"unknown executor {kind!r}; valid: serial, local, ray, ensemble")
