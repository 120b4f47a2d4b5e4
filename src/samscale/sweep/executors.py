"""Executors run many RunSpecs: in this process, in a pool of local worker processes, or on a Ray cluster.

Every executor takes RunSpecs and yields a `RunOutcome` per run as runs finish. Executors are the only writers of the
store, always through `StoreRecorder`: local workers claim their runs and record events as they happen; Ray workers
only train (and checkpoint), and the driver claims, beats the heartbeat and replays each run's events.

A holder whose run was taken over by another sweep (`ClaimLost` from any fenced write: an epoch, the checkpoint, the
end) stops that run and reports it `lost`, writing nothing more for it.
"""
from __future__ import annotations

import os
import traceback
from typing import Iterator

from samscale.errors import ClaimLost
from samscale.spec.run import RunSpec
from samscale.spec.status import FINISHED, RunStatus
from samscale.store import RunStore
from samscale.sweep.gpus import DEFAULT_RUNS_PER_GPU, plan_gpu_slots, uses_gpu, visible_gpus
from samscale.sweep.pool import run_in_pool
from samscale.sweep.recorder import (Heartbeat, RunOutcome, StoreRecorder,  # RunOutcome: re-exported
                                     failed_outcome, lost_outcome)
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
    claim = store.claim(spec.run_id)
    if claim is None:
        status = store.status(spec.run_id)
        return RunOutcome(spec.run_id, spec.label(), status if status in FINISHED else RunStatus.BUSY.value)
    recorder = StoreRecorder(store, claim)

    def handle(event: RunEvent) -> None:
        recorder(event)
        if on_event is not None:
            on_event(event)

    try:
        with Heartbeat(store, [claim]):
            result = train_run(spec, workdir=workdir, on_event=handle, fence=store.fence([claim]))
    except ClaimLost as lost:
        return lost_outcome(spec, lost)
    except Exception:  # isolate failures: the sweep records it and goes on
        return failed_outcome(recorder, spec, traceback.format_exc())
    return RunOutcome(spec.run_id, spec.label(), str(result.status), final=result.final)


def _abandoned(spec_json: str, *_: object, error: str) -> RunOutcome:
    spec = RunSpec.model_validate_json(spec_json)
    return RunOutcome(spec.run_id, spec.label(), RunStatus.FAILED.value, error=error)


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
    """A pool of `workers` spawned processes with `threads` torch threads each; workers die with the sweep, and a
    worker killed by the OS is replaced by a fresh pool that resumes its run (`samscale.sweep.pool`). With
    `gpu_slots` (`samscale.sweep.gpus`), worker i sees only the GPUs of one slot (at most one worker per slot)."""

    def __init__(self, workers: int, threads: int = 1, gpu_slots: list[tuple[str, ...]] | None = None):
        if workers < 1 or threads < 1:
            raise ValueError(f"workers and threads must be >= 1, got workers={workers}, threads={threads}")
        self.gpu_slots = list(gpu_slots or [])
        self.workers = workers
        self.threads = threads

    def run(self, specs: list[RunSpec], store_path: str, workdir: str) -> Iterator[RunOutcome]:
        tasks = [(spec.model_dump_json(), store_path, workdir, self.threads) for spec in specs]
        slots = self.gpu_slots if uses_gpu([spec.runtime.device for spec in specs]) else []
        yield from run_in_pool(execute_run, tasks, self.workers, self.threads,
                               lambda task, error: _abandoned(*task, error=error), gpu_slots=slots)


class RayExecutor:
    """Runs each spec as a Ray task with the given CPUs/GPUs; the driver alone writes the store.

    Checkpoints go to `workdir`, which must be visible to every node (a shared filesystem) for resume to work. The
    driver's writes to the store are fenced by its claims; a Ray worker's checkpoint writes are not (the worker does
    not open the store), so a driver that was taken over may still have its tasks' checkpoints land.
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
                if (claim := store.claim(spec.run_id)) is not None:
                    heartbeat.hold(claim)
                    recorder.claims[spec.run_id] = claim
                    refs[remote.remote(spec.model_dump_json(), workdir, threads)] = spec
                else:
                    yield RunOutcome(spec.run_id, spec.label(), RunStatus.BUSY.value)
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                spec = refs.pop(done[0])
                heartbeat.release(spec.run_id)
                try:
                    try:
                        events, status, final = ray.get(done[0])
                    except Exception as err:  # a task that raised: record and go on
                        recorder.failed(spec.run_id, str(err))
                        yield RunOutcome(spec.run_id, spec.label(), RunStatus.FAILED.value, error=str(err))
                        continue
                    recorder.replay(events)
                except ClaimLost as lost:
                    yield lost_outcome(spec, lost)
                    continue
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
