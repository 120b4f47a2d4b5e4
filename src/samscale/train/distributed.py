"""One run on several processes: spawn them, meet through torch.distributed, relay rank 0's events to the caller.

`samscale train CONFIG --nproc N` (``runtime.nproc = N``) lands here through `train_run`. The processes are started
with ``torch.multiprocessing``'s spawn context rather than torchrun: the run stays one call of one command (no
launcher to wrap it in), the parent keeps the run store and the heartbeat exactly as for one process (the trainer
never writes the store; rank 0's events come back through a queue and go to the caller's handler), and a failure
in any rank ends the whole run with that rank's traceback. The processes meet through a file in a temporary folder
(no port to pick or collide on; its name carries the parent's `owner_tag`, so a sweep can remove the folder of a
parent that was killed). Each process dies with the parent through the kernel's parent-death signal
(`samscale.process.die_with_parent`), as a sweep's pool workers do: a killed parent never leaves rank 0 writing the
run's checkpoint while the next sweep trains it again. The backend is gloo on CPU and NCCL on CUDA, one GPU per rank
(`samscale.train.placement`: rank r uses the r-th visible GPU; more ranks than GPUs is refused before any starts).
Under torchrun, `train_run` joins torchrun's group instead (env:// rendezvous, which can span nodes).

Inside each process the trainer holds one slice of every batch and averages explicitly (`GradientSync`), so SAM's
two modes are exact: ``global`` equals SAM on the whole batch in one process (with BatchNorm: with the batch
accumulated in per-process pieces), ``per_device`` equals m-sharpness with m = the per-process batch.
"""
from __future__ import annotations

import os
import queue as queue_module
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from samscale.process import die_with_parent, owner_tag
from samscale.spec.run import RunSpec
from samscale.train.events import EventHandler
from samscale.train.placement import COLLECTIVE_TIMEOUT, bind_rank, check_process_count

POLL_S = 0.2  # how often the parent checks on its processes while waiting for events


def launch(
    target: Callable[..., Any],
    spec: RunSpec,
    *,
    workdir: str | Path | None = None,
    on_event: EventHandler | None = None,
    max_epochs: int | None = None,
    fence: Any = None,
) -> Any:
    """Run ``target(spec, workdir=, on_event=, max_epochs=, fence=)`` in ``spec.runtime.nproc`` processes; return
    rank 0's result. ``target`` must be importable by name (a module-level function such as ``train_run``); `fence`
    (a picklable `samscale.train.checkpoint.Fence`) goes to every process."""
    nproc = spec.runtime.nproc
    if nproc < 2:
        raise ValueError(f"launch needs runtime.nproc >= 2, got {nproc}")
    if dist.is_available() and dist.is_initialized():
        raise RuntimeError("already inside a torch.distributed process group: run the target directly")
    check_process_count(nproc, spec.runtime.device)
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix=f"samscale-rendezvous-{owner_tag()}-") as folder:
        init_method = Path(folder, "store").as_uri()
        args = (target, nproc, init_method, spec.model_dump_json(), None if workdir is None else str(workdir),
                max_epochs, messages, os.getpid(), fence)
        processes = [ctx.Process(target=_worker, args=(rank, *args), name=f"samscale-rank{rank}", daemon=True)
                     for rank in range(nproc)]
        for process in processes:
            process.start()
        try:
            return _relay(messages, processes, on_event or (lambda event: None))
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()
                process.join()


def _relay(messages: Any, processes: list[Any], emit: EventHandler) -> Any:
    """Pass rank 0's events on until its result arrives; raise with the traceback of any rank that fails."""
    while True:
        try:
            kind, *payload = messages.get(timeout=POLL_S)
        except queue_module.Empty:
            dead = [p for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"process {dead[0].name} died with exit code {dead[0].exitcode} "
                                   "before reporting an error") from None
            if all(p.exitcode == 0 for p in processes):
                raise RuntimeError("all processes exited without a result from rank 0") from None
            continue
        if kind == "event":
            emit(payload[0])
        elif kind == "error":
            rank, trace = payload
            raise RuntimeError(f"rank {rank} of the run failed:\n{trace}")
        else:  # "result"
            for process in processes:
                process.join()
            return payload[0]


def _worker(rank: int, target: Callable[..., Any], nproc: int, init_method: str, spec_json: str,
            workdir: str | None, max_epochs: int | None, messages: Any, parent_pid: int, fence: Any) -> None:
    """One process: tie its life to the parent's, join the group, train its part of the run, send rank 0's events
    and result home."""
    die_with_parent(parent_pid)
    spec = RunSpec.model_validate_json(spec_json)
    cuda = bind_rank(rank, spec.runtime.device)
    if spec.runtime.threads is None:  # share the CPUs instead of every process taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method, rank=rank, world_size=nproc,
                            timeout=COLLECTIVE_TIMEOUT)
    try:
        on_event = (lambda event: messages.put(("event", event))) if rank == 0 else None
        result = target(spec, workdir=workdir, on_event=on_event, max_epochs=max_epochs, fence=fence)
        if rank == 0:
            messages.put(("result", result))
    except BaseException:
        messages.put(("error", rank, traceback.format_exc()))
        raise SystemExit(1) from None
    finally:
        dist.destroy_process_group()
