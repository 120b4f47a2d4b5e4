"""GPUs shared out among a sweep's workers, on a host without one: the device count is mocked, the workers are real
spawned processes, and each reports the CUDA_VISIBLE_DEVICES it was given."""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

from samscale.errors import ConfigError
from samscale.sweep import executors, gpus
from samscale.sweep.ensemble import DEFAULT_MAX_PACK_PARAMS, EnsembleExecutor


def test_slots_of_a_four_gpu_host():
    four = gpus.visible_gpus(environ={}, count=4)
    assert four == ["0", "1", "2", "3"]
    assert gpus.plan_gpu_slots(four) == [("0",), ("1",), ("2",), ("3",)]  # 4 distinct devices
    twice = gpus.plan_gpu_slots(four, runs_per_gpu=2)
    assert Counter(twice) == {("0",): 2, ("1",): 2, ("2",): 2, ("3",): 2}  # each handed out twice
    assert twice[:4] == [("0",), ("1",), ("2",), ("3",)]  # the first workers spread over every GPU
    assert gpus.plan_gpu_slots(four, gpus_per_run=2) == [("0", "1"), ("2", "3")]
    assert gpus.plan_gpu_slots(["0", "1", "2"], gpus_per_run=2) == [("0", "1")]  # a GPU left over stays idle
    assert gpus.plan_gpu_slots([], runs_per_gpu=3) == []


def test_the_sweeps_own_visible_devices_are_shared_out_and_bad_values_refused():
    assert gpus.visible_gpus(environ={"CUDA_VISIBLE_DEVICES": "2,3"}, count=8) == ["2", "3"]
    assert gpus.visible_gpus(environ={"CUDA_VISIBLE_DEVICES": ""}, count=8) == []
    with pytest.raises(ConfigError, match="local workers get whole GPUs"):
        gpus.plan_gpu_slots(["0"], gpus_per_run=0.5)
    with pytest.raises(ConfigError, match="--gpus-per-run=3 but this host shows 2 GPUs"):
        gpus.plan_gpu_slots(["0", "1"], gpus_per_run=3)
    with pytest.raises(ConfigError, match="--runs-per-gpu must be a positive integer, got 0"):
        gpus.plan_gpu_slots(["0"], runs_per_gpu=0)


@pytest.mark.parametrize("count, runs_per_gpu", [(4, 1), (2, 2)])
def test_no_worker_sees_a_gpu_it_was_not_given(count, runs_per_gpu):
    """A real spawned pool of 4 workers on a "4-GPU" host (one run per GPU) and on a "2-GPU" host (two): every worker
    sees exactly one slot, always the same one, and the slots seen are among those handed out (each GPU to at most
    `runs_per_gpu` workers)."""
    slots = gpus.plan_gpu_slots(gpus.visible_gpus(environ={}, count=count), runs_per_gpu=runs_per_gpu)
    context = mp.get_context("spawn")
    initializer, initargs = gpus.pool_initializer(slots, 1, os.getpid(), context)
    with ProcessPoolExecutor(len(slots), mp_context=context, initializer=initializer, initargs=initargs) as pool:
        seen = [f.result() for f in [pool.submit(gpus.worker_devices) for _ in range(4 * len(slots))]]
    by_worker: dict[int, set] = {}
    for pid, visible in seen:
        by_worker.setdefault(pid, set()).add(visible)
    assert all(len(values) == 1 for values in by_worker.values())  # a worker's GPUs never change
    given = Counter(",".join(slot) for slot in slots)
    used = Counter(next(iter(values)) for values in by_worker.values())
    assert all(used[slot] <= given[slot] for slot in used) and set(used) <= set(given)
    assert len(by_worker) <= len(slots)


def _devices_unless_first(marker: str) -> tuple[int, str | None]:
    """The first call anywhere kills its worker (as the OS would); every other returns the worker's GPUs."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return gpus.worker_devices()
    os._exit(9)


def test_a_fresh_pool_after_a_killed_worker_shares_out_the_gpu_slots_again(tmp_path):
    """A worker dies; the task it held can finish only in the fresh pool, whose workers must also start through the
    slot initializer: every result comes from a worker that sees exactly one of the two slots."""
    from samscale.sweep.pool import run_in_pool

    marker = str(tmp_path / "died")
    tasks = [(marker,)] * 3
    results = list(run_in_pool(_devices_unless_first, tasks, workers=4, threads=1,
                               abandon=lambda task, error: (0, f"given up: {error}"), gpu_slots=[("0",), ("1",)]))
    assert os.path.exists(marker) and len(results) == 3
    assert {visible for _, visible in results} <= {"0", "1"}


def test_executors_size_their_pools_to_the_gpu_slots(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(gpus, "gpu_memory_bytes", lambda gpu: 80 * 2**30)
    monkeypatch.setattr(executors, "default_pool_shape", lambda: (16, 1))
    local = executors.make_executor("local", runs_per_gpu=2)
    assert local.workers == 8 and local.threads == 2 and Counter(local.gpu_slots) == {(g,): 2 for g in "0123"}
    assert executors.make_executor("local", workers=3).workers == 3  # --workers still decides
    ensemble = executors.make_executor("ensemble", gpus_per_run=2)
    assert isinstance(ensemble, EnsembleExecutor) and ensemble.gpu_slots == [("0", "1"), ("2", "3")]
    assert ensemble.workers == 2 and ensemble.fallback.gpu_slots == [("0", "1"), ("2", "3")]
    # the pack cap follows the GPU's memory: half of 80 GiB at 64 bytes per packed parameter
    assert ensemble.max_pack_params == 80 * 2**30 // 2 // 64
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    cpu = executors.make_executor("ensemble")
    assert cpu.gpu_slots == [] and cpu.max_pack_params == DEFAULT_MAX_PACK_PARAMS  # the measured CPU budget
    assert executors.make_executor("local").workers == 16


def test_pack_budget_divides_a_gpu_among_its_workers():
    slots = [("0",), ("0",)]
    assert gpus.pack_param_budget(500_000, [], memory_bytes=10**12) == 500_000
    assert gpus.pack_param_budget(500_000, slots, memory_bytes=64 * 10**9, runs_per_gpu=2) == 250_000_000
    assert gpus.pack_param_budget(500_000, slots, memory_bytes=10**6) == 500_000  # never below the CPU budget


@pytest.mark.slow
def test_a_local_pool_hands_gpu_runs_their_slot_and_cpu_runs_none(tiny_config, tmp_path):
    """Two runs of `auto` device through LocalPoolExecutor with one "GPU" slot given twice: the workers start
    through the slot initializer and both runs train (on this CPU host, where `auto` is the CPU)."""
    from samscale.spec.run import build_spec
    from samscale.workdir import store_path

    tiny_config["train"]["epochs"] = 1
    specs = [build_spec(tiny_config, [f"train.seed={seed}", "runtime.device=auto"]) for seed in (0, 1)]
    pool = executors.LocalPoolExecutor(4, 1, gpu_slots=[("0",), ("0",)])
    store = store_path(tmp_path)
    store.parent.mkdir(parents=True, exist_ok=True)
    from samscale.store import RunStore

    runs = RunStore(store)
    for spec in specs:
        runs.register(spec)
    outcomes = list(pool.run(specs, str(store), str(tmp_path)))
    assert sorted(o.status for o in outcomes) == ["complete", "complete"]
    assert gpus.uses_gpu(["auto"]) and gpus.uses_gpu(["cuda:1"]) and not gpus.uses_gpu(["cpu", "mps"])
