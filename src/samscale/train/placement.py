"""Where the processes of one run live: one GPU per rank, gloo on the CPU when asked, torchrun's env:// rendezvous.

A run on N processes (`runtime.nproc`) puts rank r on the r-th GPU this process can see, so `CUDA_VISIBLE_DEVICES`
chooses the GPUs (rank r uses `cuda:r` of the visible ones, the r-th listed). NCCL cannot put two ranks on one GPU,
so a CUDA run with more processes than visible GPUs is refused before anything starts, with the two ways out in the
message: fewer processes, or `runtime.device=cpu` (gloo on the CPU). A fixed `runtime.device=cuda:N` names one GPU
and cannot hold several ranks either; it is refused with the same advice.

Started by `torchrun` (the environment holds RANK, WORLD_SIZE and LOCAL_RANK), a run meets its peers through
torchrun's env:// rendezvous (MASTER_ADDR / MASTER_PORT), so one run can span nodes; rank r then uses the GPU of its
LOCAL_RANK. Every collective has an explicit timeout (`COLLECTIVE_TIMEOUT`), so a rank that hangs ends the run
with an error instead of blocking the others forever.
"""
from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Iterator, Mapping

import torch
import torch.distributed as dist

from samscale.errors import ConfigError

COLLECTIVE_TIMEOUT = timedelta(minutes=15)
"""How long a collective may wait for the slowest rank before the run fails (NCCL's and gloo's timeout). Long enough
for the first epoch's cuDNN autotuning and an end-of-epoch evaluation on rank 0, short enough to free a GPU node
well within an hour when one rank died."""

TORCHRUN_VARIABLES: tuple[str, ...] = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def wants_cuda(device: str) -> bool:
    """Whether a run with this `runtime.device` trains on CUDA ('auto' does when a GPU is visible)."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def check_process_count(nproc: int, device: str, gpu_count: int | None = None) -> None:
    """Refuse, with a message saying what to do, a CUDA run whose `nproc` processes cannot each have their own GPU.

    `gpu_count` defaults to the GPUs this process sees (`torch.cuda.device_count()`, which honours
    `CUDA_VISIBLE_DEVICES`). CPU runs (gloo) may have any number of processes.
    """
    if nproc < 2 or not wants_cuda(device):
        return
    count = torch.cuda.device_count() if gpu_count is None else gpu_count
    if device.startswith("cuda:"):
        raise ConfigError(f"runtime.device={device} names one GPU, but runtime.nproc={nproc} processes need one GPU "
                          "each: use runtime.device=cuda (or auto) and CUDA_VISIBLE_DEVICES to choose the GPUs")
    if nproc > count:
        raise ConfigError(f"runtime.nproc={nproc} processes on CUDA need {nproc} GPUs, but this host shows {count} "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): use "
                          f"--nproc {max(count, 1)} or fewer, or runtime.device=cpu to run {nproc} processes "
                          "with gloo on the CPU")


def bind_rank(local_rank: int, device: str) -> bool:
    """Make GPU `local_rank` of the visible ones this process's current device when the run trains on CUDA; returns
    whether it does (then the backend is NCCL, else gloo)."""
    if not wants_cuda(device):
        return False
    torch.cuda.set_device(local_rank)
    return True


def launched_by_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is one rank of a run started by torchrun (its rendezvous variables are set)."""
    environ = os.environ if environ is None else environ
    return all(name in environ for name in TORCHRUN_VARIABLES)


def torchrun_world(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) that torchrun gave this process."""
    environ = os.environ if environ is None else environ
    try:
        return int(environ["RANK"]), int(environ["WORLD_SIZE"]), int(environ["LOCAL_RANK"])
    except (KeyError, ValueError) as err:
        raise ConfigError(f"torchrun's variables {TORCHRUN_VARIABLES} must be integers: {err}") from None


@contextlib.contextmanager
def torchrun_group(nproc: int, device: str) -> Iterator[None]:
    """Join the process group torchrun set up (env:// rendezvous) for the block; `nproc` must be its world size."""
    rank, world, local_rank = torchrun_world()
    check_process_count(int(os.environ.get("LOCAL_WORLD_SIZE", world)), device)  # the ranks on this node
    if world != nproc:
        raise ConfigError(f"runtime.nproc={nproc} but torchrun started {world} processes: they must agree "
                          f"(samscale train sets runtime.nproc from torchrun's WORLD_SIZE)")
    cuda = bind_rank(local_rank, device)
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://", rank=rank, world_size=world,
                            timeout=COLLECTIVE_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()
