"""GPUs shared out among a sweep's local workers: each worker sees only its own GPUs, through CUDA_VISIBLE_DEVICES.

On a host with GPUs, a local pool (and the ensemble executor's pool) gets one worker per *slot*. A slot is the
group of `gpus_per_run` GPUs one run trains on; each group is handed out `runs_per_gpu` times (default
`DEFAULT_RUNS_PER_GPU`: one run per GPU, so runs never compete for a GPU's memory; 2 or more pays for small models,
which leave a GPU idle between their kernels). A worker takes its slot when it starts, before it touches CUDA, and
sets `CUDA_VISIBLE_DEVICES` to it: its `auto` or `cuda` device is then its own GPU, and it cannot see the others.
The sweep's own `CUDA_VISIBLE_DEVICES`, when set, is the list shared out (so `CUDA_VISIBLE_DEVICES=2,3` sweeps on
GPUs 2 and 3 only). Slots are ordered so that the first workers spread over all GPUs before any GPU gets a second.

The ensemble executor's pack size follows the device (`pack_param_budget`): on a CPU its measured budget, on a GPU a
budget derived from the GPU's memory and the number of workers sharing it.

This module imports only the standard library at module level: a spawned worker imports it to run its initializer
before anything else (see `samscale.sweep.lifeline`).
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

from samscale.errors import ConfigError
from samscale.sweep.lifeline import worker_init

DEFAULT_RUNS_PER_GPU = 1
"""Runs sharing one GPU at a time by default (`--runs-per-gpu`)."""

BYTES_PER_PACKED_PARAM = 64
"""GPU memory a pack needs per parameter of its members: fp32 weights, gradients, momentum, the SAM-perturbed copy
and its gradients (20 bytes), and as much again twice over for activations and the allocator's slack. A heuristic:
only a GPU can measure it (benchmarks/gpu.sh packs ResNet-18 and MLP members up to this budget)."""

GPU_MEMORY_SHARE = 0.5
"""Share of a GPU's memory the packs of the workers on it may plan for (the rest: CUDA context, data, fragmentation)."""


def visible_gpus(environ: Mapping[str, str] | None = None, count: int | None = None) -> list[str]:
    """The GPUs this sweep may share out, as CUDA_VISIBLE_DEVICES entries: its own CUDA_VISIBLE_DEVICES list when
    set (an empty one: none), else 0 … count - 1 with `count` = torch.cuda.device_count()."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [entry.strip() for entry in listed.split(",") if entry.strip()]
    if count is None:
        import torch  # only here: the workers that import this module must not load torch before their initializer

        count = torch.cuda.device_count()
    return [str(i) for i in range(count)]


def plan_gpu_slots(gpus: Sequence[str], gpus_per_run: float = 1, runs_per_gpu: int = DEFAULT_RUNS_PER_GPU
                   ) -> list[tuple[str, ...]]:
    """One slot per worker: consecutive groups of `gpus_per_run` GPUs, each group listed `runs_per_gpu` times
    (round-robin over the groups). No GPUs: no slots. `gpus_per_run` 0 means 1 (the default of the command line)."""
    if isinstance(runs_per_gpu, bool) or not isinstance(runs_per_gpu, int) or runs_per_gpu < 1:
        raise ConfigError(f"--runs-per-gpu must be a positive integer, got {runs_per_gpu!r}")
    per_run = 1 if gpus_per_run == 0 else gpus_per_run
    if per_run < 0 or per_run != int(per_run):
        raise ConfigError(f"--gpus-per-run={gpus_per_run}: local workers get whole GPUs; share one GPU among "
                          "several runs with --runs-per-gpu instead")
    per_run = int(per_run)
    if not gpus:
        return []
    if per_run > len(gpus):
        raise ConfigError(f"--gpus-per-run={per_run} but this host shows {len(gpus)} GPUs ({','.join(gpus)})")
    groups = [tuple(gpus[i : i + per_run]) for i in range(0, len(gpus) - per_run + 1, per_run)]
    return [group for _ in range(runs_per_gpu) for group in groups]


def uses_gpu(devices: Sequence[str]) -> bool:
    """Whether runs with these `runtime.device` values would train on a GPU (all but 'cpu', 'mps', 'xpu…')."""
    return any(device == "auto" or device.startswith("cuda") for device in devices)


def pool_initializer(slots: Sequence[tuple[str, ...]], threads: int, parent_pid: int, context: Any
                     ) -> tuple[Any, tuple]:
    """(initializer, initargs) of a process pool whose workers each take one of `slots` (none: no GPUs)."""
    if not slots:
        return worker_init, (threads, parent_pid)
    queue = context.Queue()
    for slot in slots:
        queue.put(",".join(slot))
    return gpu_worker_init, (queue, threads, parent_pid)


def gpu_worker_init(slots: Any, threads: int, parent_pid: int) -> None:
    """Pool initializer: take the next slot, make it this worker's only visible GPUs, then `worker_init`."""
    os.environ["CUDA_VISIBLE_DEVICES"] = slots.get(timeout=60)
    worker_init(threads, parent_pid)


def worker_devices() -> tuple[int, str | None]:
    """(pid, CUDA_VISIBLE_DEVICES) of the calling worker: what a pool's worker was given (a check, and the tests')."""
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def gpu_memory_bytes(gpu: str) -> int:
    """Total memory of one GPU, by its CUDA_VISIBLE_DEVICES entry (read through torch in this process)."""
    import torch

    index = visible_gpus().index(gpu) if "CUDA_VISIBLE_DEVICES" in os.environ else int(gpu)
    return int(torch.cuda.get_device_properties(index).total_memory)


def pack_param_budget(cpu_budget: int, slots: Sequence[tuple[str, ...]], memory_bytes: int | None = None,
                      runs_per_gpu: int = DEFAULT_RUNS_PER_GPU) -> int:
    """Most parameters of all members of one pack: `cpu_budget` without GPUs; on GPUs, GPU_MEMORY_SHARE of one GPU's
    memory (`memory_bytes`, read from the first slot's first GPU by default) over BYTES_PER_PACKED_PARAM, divided
    among the `runs_per_gpu` workers that share a GPU; never below `cpu_budget`."""
    if not slots:
        return cpu_budget
    memory = gpu_memory_bytes(slots[0][0]) if memory_bytes is None else memory_bytes
    budget = math.floor(memory * GPU_MEMORY_SHARE / BYTES_PER_PACKED_PARAM / runs_per_gpu)
    return max(cpu_budget, budget)
