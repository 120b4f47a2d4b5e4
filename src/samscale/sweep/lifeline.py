"""The lifeline of a sweep's worker processes: each one dies when the sweep process that started it dies.

A spawned worker first unpickles its pool initializer, importing the initializer's module. This module (and
`samscale.process`, which it uses) imports only the standard library, so the parent-death signal is set within
moments of the worker's start, before torch and the trainer are imported (seconds on a busy machine, during which a
killed sweep would otherwise leave its workers, and through them the multiprocessing resource tracker, running). The
kernel's signal only covers deaths after it is set; a worker whose sweep died earlier sees a different parent and
exits at once.
"""
from __future__ import annotations

from samscale.process import die_with_parent

__all__ = ["die_with_parent", "worker_init"]


def worker_init(threads: int, parent_pid: int) -> None:
    """Pool initializer of a local sweep worker: tie its life to the sweep's, then set its torch threads."""
    die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(threads)
