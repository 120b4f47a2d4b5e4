"""A pool of local worker processes that outlives its workers: a worker killed by the OS (out of memory, a stray
SIGKILL) breaks a `ProcessPoolExecutor` for good, so the tasks it had not finished go to a fresh pool.

The run a killed worker held is left `running` in the store under a pid that is provably dead (the broken pool's
workers are all reaped before the fresh pool starts), so the fresh pool's worker takes it over at once and resumes
it from its last checkpoint. Workers die with the sweep (`samscale.sweep.lifeline`). Every pool, a fresh one too,
starts its workers through the same initializer (`samscale.sweep.gpus.pool_initializer`): with GPU slots, each fresh
pool shares out all the slots again (the broken pool's workers, and so their GPUs, are gone).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Sequence, TypeVar

from samscale.sweep.gpus import pool_initializer

LOG = logging.getLogger("samscale.sweep")
R = TypeVar("R")

MAX_BARREN_POOLS = 3
"""Pools in a row that may break before finishing a single task; after that the remaining tasks are given up (each
gets `abandon`'s result) instead of killing worker after worker forever (a run that exhausts memory every time)."""


def run_in_pool(function: Callable[..., R], tasks: Sequence[tuple[Any, ...]], workers: int, threads: int,
                abandon: Callable[[tuple[Any, ...], str], R], gpu_slots: Sequence[tuple[str, ...]] = ()
                ) -> Iterator[R]:
    """Yield `function(*task)` for every task, as they finish, from `workers` spawned processes with `threads` torch
    threads each (with `gpu_slots`, at most one worker per slot, each seeing only its slot's GPUs); tasks a broken
    pool did not finish are submitted again to a fresh pool."""
    remaining = list(range(len(tasks)))
    barren = 0
    context = mp.get_context("spawn")
    if gpu_slots:
        workers = min(workers, len(gpu_slots))
    while remaining:
        finished: set[int] = set()
        broken: BaseException | None = None
        initializer, initargs = pool_initializer(gpu_slots, threads, os.getpid(), context)
        with ProcessPoolExecutor(min(workers, len(remaining)), mp_context=context, initializer=initializer,
                                 initargs=initargs) as pool:
            futures: dict[Future, int] = {}
            try:
                for index in remaining:
                    futures[pool.submit(function, *tasks[index])] = index
            except BrokenProcessPool as err:  # a worker died while the tasks were being handed out
                broken = err
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        result = future.result()
                    except BrokenProcessPool as err:
                        broken = err
                        continue
                    finished.add(futures[future])
                    yield result
        remaining = [index for index in remaining if index not in finished]
        if not remaining:
            return
        barren = 0 if finished else barren + 1
        message = (f"a worker process died ({broken}); it was probably killed by the operating system (out of "
                   "memory?)")
        if barren >= MAX_BARREN_POOLS:
            LOG.error("%s; %d pools in a row broke before finishing any task: giving up %d task(s), which the next "
                      "sweep resumes", message, barren, len(remaining))
            for index in remaining:
                yield abandon(tasks[index], f"{message}; {barren} pools in a row broke, so this sweep gave up; the "
                                            "run is resumable by the next sweep")
            return
        LOG.warning("%s; %d unfinished task(s) go to a fresh pool", message, len(remaining))
