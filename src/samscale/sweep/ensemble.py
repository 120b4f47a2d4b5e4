"""The ensemble executor: packs compatible runs of a sweep and trains each pack as one batched model.

Runs that agree on everything but seed and optimizer settings (`samscale.train.ensemble.pack_key`: the seeds, the
ρ grid and the SGD/SAM arms of one model size) are packed, up to `max_members` per pack, and each pack is trained
by `train_ensemble` in one process (this one, or one of a pool of workers). To the store each member is an ordinary run: it is claimed, its heartbeat beats
while it trains, and its events are recorded by `StoreRecorder` as they happen, so a killed sweep resumes each member
from its last checkpoint, like any other executor's runs. Runs that cannot be packed (see
`samscale.train.ensemble.unpackable_reason`: unsupported families, sparsity, m-sharpness, Adam bases, bf16/fp16,
streamed data, per-token tagging), and packs that would hold a single run, go to the `fallback` executor, one `train_run` each.
"""
from __future__ import annotations

import math
import traceback
from typing import Iterator, Protocol

from samscale.errors import ClaimLost
from samscale.models.registry import param_count
from samscale.spec.run import RunSpec
from samscale.spec.status import FINISHED, RunStatus
from samscale.store import RunStore
from samscale.sweep.pool import run_in_pool
from samscale.sweep.recorder import Heartbeat, RunOutcome, StoreRecorder, failed_outcome, lost_outcome
from samscale.train.ensemble import pack_key, train_ensemble, unpackable_reason
from samscale.train.events import RunEnded, RunEvent

DEFAULT_MAX_MEMBERS = 32
"""Largest pack by default."""

DEFAULT_MAX_PACK_PARAMS = 500_000
"""Most parameters of all members of a pack together (counted on the family's default input shape). With this
budget width-0.25 MNIST MLPs (61k parameters each) pack up to 8 runs, width 0.5 up to 3, and width 1 and larger
train one by one. On an idle 2-core CPU packing barely pays (`benchmarks/bench_ensemble.py`, one process, one
thread): 9 packed width-0.25 MLPs train 1.27× as fast per core as one by one, 3 packed only 0.69×, 9 of width 1
1.00×; end to end against the local pool the executor runs at 0.74–0.97× (widths 0.25–1). CPU steps of these
models are bound by their matrix products, which packing does not shrink; packing is for GPUs, where a small model
leaves the device idle (not measured here: no GPU was available). This is the CPU budget; on CUDA `make_executor`
derives a larger one from the GPU's memory (`samscale.sweep.gpus.pack_param_budget`)."""


class Executor(Protocol):
    """Anything with the executors' `run(specs, store_path, workdir)` that yields one RunOutcome per run."""

    def run(self, specs: list[RunSpec], store_path: str, workdir: str) -> Iterator[RunOutcome]: ...


def plan_packs(specs: list[RunSpec], max_members: int = DEFAULT_MAX_MEMBERS, min_packs: int = 1,
               max_pack_params: int = DEFAULT_MAX_PACK_PARAMS) -> tuple[list[list[RunSpec]], list[RunSpec]]:
    """(packs, runs to train one by one). Packs keep the order of their first run in `specs`. A group of compatible
    runs is split into near-equal packs: as few as keep each within `max_members` and `max_pack_params` parameters
    in all, but at least `min_packs` (e.g. one per worker, so that every worker has a pack) as long as each keeps
    two members. Runs whose pack would hold one member are trained one by one."""
    if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise ValueError(f"max_members must be a positive integer, got {max_members!r}")
    groups: dict[str, list[RunSpec]] = {}
    singles: list[RunSpec] = []
    for spec in specs:
        if unpackable_reason(spec) is None:
            groups.setdefault(pack_key(spec), []).append(spec)
        else:
            singles.append(spec)
    packs: list[list[RunSpec]] = []
    for group in groups.values():
        cap = min(max_members, max(1, max_pack_params // _param_count(group[0])))
        if len(group) == 1 or cap == 1:
            singles.extend(group)
            continue
        count = max(math.ceil(len(group) / cap), min(min_packs, len(group) // 2))
        size = math.ceil(len(group) / count)
        for i in range(0, len(group), size):
            chunk = group[i : i + size]
            if len(chunk) > 1:
                packs.append(chunk)
            else:
                singles.extend(chunk)
    return packs, singles


def _param_count(spec: RunSpec) -> int:
    """Parameters of the spec's model on its family's default input shape (closed form, nothing built or loaded);
    1 when the family cannot count them that way."""
    try:
        return param_count(spec.model.family, spec.model.size, **spec.model.options)
    except (TypeError, ValueError, KeyError):
        return 1


def execute_pack(spec_jsons: list[str], store_path: str, workdir: str, threads: int | None) -> list[RunOutcome]:
    """Claim the pack's runs (given as RunSpec JSON), train the claimed ones together and record them; one
    RunOutcome per run.

    Runs another sweep holds (or has finished) are left to it. A member that cannot be built or restored is
    recorded `failed` with its own error while the others train; an exception of the pack as a whole ends the
    members that had not ended yet as `failed`, with the traceback, instead of ending the sweep. A member taken over
    by another sweep is `lost`: nothing more is written for it.
    """
    specs = [RunSpec.model_validate_json(text) for text in spec_jsons]
    if threads:
        specs = [spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"threads": threads})})
                 for spec in specs]
    store = RunStore(store_path)
    recorder = StoreRecorder(store)
    outcomes: list[RunOutcome] = []
    claimed: list[RunSpec] = []
    for spec in specs:
        if (claim := store.claim(spec.run_id)) is not None:
            recorder.claims[spec.run_id] = claim
            claimed.append(spec)
        else:
            status = store.status(spec.run_id)
            outcomes.append(RunOutcome(spec.run_id, spec.label(), status if status in FINISHED else RunStatus.BUSY.value))
    if not claimed:
        return outcomes
    ended: dict[str, RunEnded] = {}
    with Heartbeat(store, recorder.claims.values()) as heartbeat:

        def handle(event: RunEvent) -> None:
            recorder(event)
            if isinstance(event, RunEnded):
                ended[event.run_id] = event
                heartbeat.release(event.run_id)

        try:
            results = train_ensemble(claimed, workdir=workdir, on_event=handle,
                                     fence=store.fence(recorder.claims.values()))
        except Exception:  # isolate failures: the members that did not end are recorded as failed
            error = traceback.format_exc()
            for spec in claimed:
                if spec.run_id in ended:
                    event = ended[spec.run_id]
                    outcomes.append(RunOutcome(spec.run_id, spec.label(), str(event.status), final=event.final))
                else:
                    outcomes.append(failed_outcome(recorder, spec, error))
            return outcomes
    for spec, result in zip(claimed, results):
        if result.status == RunStatus.FAILED:  # a member that could not start (or end): its own error
            outcomes.append(failed_outcome(recorder, spec, result.error or "failed"))
        elif result.status == RunStatus.LOST:
            outcomes.append(lost_outcome(spec, ClaimLost(result.error or f"run {spec.run_id} was taken over")))
        else:
            outcomes.append(RunOutcome(spec.run_id, spec.label(), str(result.status), final=result.final))
    return outcomes


class EnsembleExecutor:
    """Trains packs of compatible runs as batched models: in this process with `workers=1`, else in a pool of
    `workers` spawned processes (which die with the sweep), each pack with `threads` torch threads. Runs that cannot
    be packed go to `fallback` (e.g. a local process pool) once the packs are done."""

    def __init__(self, fallback: Executor, workers: int = 1, threads: int | None = None,
                 max_members: int = DEFAULT_MAX_MEMBERS, gpu_slots: list[tuple[str, ...]] | None = None,
                 max_pack_params: int = DEFAULT_MAX_PACK_PARAMS):
        for name, value in (("workers", workers), ("threads", threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        plan_packs([], max_members)  # validates max_members
        self.fallback = fallback
        self.workers = workers
        self.threads = threads
        self.max_members = max_members
        self.gpu_slots = list(gpu_slots or [])  # with GPUs: one worker per slot (`samscale.sweep.gpus`)
        self.max_pack_params = max_pack_params  # device-dependent: `samscale.sweep.gpus.pack_param_budget`

    def run(self, specs: list[RunSpec], store_path: str, workdir: str) -> Iterator[RunOutcome]:
        packs, singles = plan_packs(specs, self.max_members, min_packs=self.workers,
                                    max_pack_params=self.max_pack_params)
        jobs = [[spec.model_dump_json() for spec in pack] for pack in packs]
        if self.workers == 1 or len(jobs) <= 1:
            for job in jobs:
                yield from execute_pack(job, store_path, workdir, self.threads)
        else:
            yield from self._pool(jobs, store_path, workdir)
        if singles:
            yield from self.fallback.run(singles, store_path, workdir)

    def _pool(self, jobs: list[list[str]], store_path: str, workdir: str) -> Iterator[RunOutcome]:
        tasks = [(job, store_path, workdir, self.threads) for job in jobs]
        for outcomes in run_in_pool(execute_pack, tasks, self.workers, self.threads or 1, _abandoned_pack,
                                    gpu_slots=self.gpu_slots):
            yield from outcomes


def _abandoned_pack(task: tuple, error: str) -> list[RunOutcome]:
    specs = [RunSpec.model_validate_json(text) for text in task[0]]
    return [RunOutcome(spec.run_id, spec.label(), RunStatus.FAILED.value, error=error) for spec in specs]
