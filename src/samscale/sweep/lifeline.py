"""The lifeline of a sweep's worker processes: each one dies when the sweep process that started it dies.

A spawned worker first unpickles its pool initializer, importing the initializer's module. This module imports only
the standard library, so the parent-death signal is set within moments of the worker's start, before torch and the
trainer are imported (seconds on a busy machine, during which a killed sweep would otherwise leave its workers, and
through them the multiprocessing resource tracker, running). The kernel's signal only covers deaths after it is set;
a worker whose sweep died earlier sees a different parent and exits at once.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """On Linux, have the kernel SIGKILL this process when its parent dies; exit now if `parent_pid` is gone."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def worker_init(threads: int, parent_pid: int) -> None:
    """Pool initializer of a local sweep worker: tie its life to the sweep's, then set its torch threads."""
    die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(threads)
