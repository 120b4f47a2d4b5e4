"""Recovering from faults: a pool worker killed by the OS, a pack member that cannot start, the leftovers of killed
processes, and the processes of a multi-process run whose parent was killed."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import seed_study
from samscale.fileio import is_temp_name
from samscale.process import owner_tag
from samscale.spec.study import Study
from samscale.store import RunStore
from samscale.sweep.debris import clear_debris
from samscale.sweep.ensemble import EnsembleExecutor
from samscale.sweep.executors import LocalPoolExecutor, SerialExecutor
from samscale.sweep.sweep import sweep
from samscale.workdir import checkpoint_path, store_path

COLUMNS = ["run_id", "status", "final_train_loss", "final_val_acc", "final_test_acc", "best_epoch"]


def _study(tiny_config: dict, epochs: int = 2, seeds=(0, 1), train_subset: int | None = None) -> Study:
    return seed_study("recovery", tiny_config, epochs, seeds, train_subset)


def _table(workdir: Path):
    frame = RunStore(store_path(workdir)).runs_frame("recovery")
    return frame[COLUMNS].sort_values("run_id").reset_index(drop=True)


def _running_part_way(path: Path, epochs: int) -> list[tuple[str, str]]:
    """(run_id, owner) of the runs held with at least one epoch done and two to do (a cheap query: the sweep is not
    slowed down)."""
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path, timeout=5.0) as db:
            return db.execute("SELECT run_id, owner FROM runs WHERE status = 'running' AND epochs_done BETWEEN 1 AND ? "
                              "AND owner IS NOT NULL", (epochs - 2,)).fetchall()
    except sqlite3.OperationalError:  # the sweep is still creating its tables
        return []


def test_a_worker_killed_by_the_os_leaves_its_run_resumable_and_the_sweep_goes_on(tiny_config, tmp_path):
    study = _study(tiny_config, epochs=4, seeds=(0, 1), train_subset=1500)  # a run for each of the two workers
    work = tmp_path / "work"
    killed: list[str] = []

    def kill_one_worker() -> None:  # the OS kills the worker training a run, part-way through it
        deadline = time.time() + 300
        while time.time() < deadline:
            busy = _running_part_way(store_path(work), epochs=4)
            if busy:
                run_id, owner = busy[0]
                os.kill(int(owner.split(":")[1]), signal.SIGKILL)
                killed.append(run_id)
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    try:
        summary = sweep(study, work, LocalPoolExecutor(workers=2, threads=1))
    finally:
        killer.join()
    assert killed, "no worker was killed"
    frame = RunStore(store_path(work)).runs_frame().set_index("run_id")
    assert (frame["status"] == "complete").all() and summary.count("complete") == 2
    assert frame.loc[killed[0], "attempts"] == 2  # resumed by a worker of the fresh pool
    history = RunStore(store_path(work)).history(killed[0])
    assert list(history["epoch"]) == [1, 2, 3, 4] and set(history["attempt"]) == {2}
    assert frame["attempts"].max() == 2  # (the broken pool's other worker is stopped too; its run resumes likewise)
    sweep(study, tmp_path / "reference", SerialExecutor())
    assert _table(work).equals(_table(tmp_path / "reference"))  # nothing lost, numbers identical


def test_a_task_that_kills_every_worker_is_given_up_after_three_barren_pools(caplog):
    from samscale.sweep.pool import MAX_BARREN_POOLS, run_in_pool

    with caplog.at_level("WARNING", logger="samscale.sweep"):  # each task ends its worker, as an OOM kill would
        results = list(run_in_pool(os._exit, [(9,), (9,)], workers=1, threads=1,
                                   abandon=lambda task, error: ("given up", task, error)))
    assert [result[:2] for result in results] == [("given up", (9,)), ("given up", (9,))]
    assert "3 pools in a row broke" in results[0][2] and "resumable by the next sweep" in results[0][2]
    assert caplog.text.count("go to a fresh pool") == MAX_BARREN_POOLS - 1


def test_a_member_with_a_corrupt_checkpoint_leaves_its_pack_with_its_own_error(tiny_config, tmp_path):
    study = _study(tiny_config, epochs=2, seeds=(0, 1, 2))
    specs = study.expand()
    bad = specs[1].run_id
    corrupt = checkpoint_path(tmp_path / "work", bad)
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"PK\x03\x04 not a checkpoint at all")
    summary = sweep(study, tmp_path / "work", EnsembleExecutor(SerialExecutor(), workers=1))
    outcomes = {outcome.run_id: outcome for outcome in summary.outcomes}
    assert outcomes[bad].status == "failed" and str(corrupt) in outcomes[bad].error
    frame = RunStore(store_path(tmp_path / "work")).runs_frame().set_index("run_id")
    assert frame.loc[bad, "status"] == "failed" and str(corrupt) in frame.loc[bad, "error"]
    for spec in specs:  # the others trained, as a pack, and carry no one's error
        if spec.run_id != bad:
            assert outcomes[spec.run_id].status == "complete" and outcomes[spec.run_id].error is None
            assert frame.loc[spec.run_id, "status"] == "complete" and frame.loc[spec.run_id, "epochs_done"] == 2
            assert frame.loc[spec.run_id, "final_test_acc"] > 0.1


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_sweep_clears_the_leftovers_of_dead_processes_and_only_those(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("SAMSCALE_DATA", str(tmp_path / "data"))
    study = _study(tiny_config, epochs=1, seeds=(0,))
    work = tmp_path / "work"
    run_id = study.expand()[0].run_id
    target = checkpoint_path(work, run_id)
    # a writer killed in the middle of a checkpoint write leaves its temporary file (written by the real code)
    killed_writer = ("import os, sys, torch\nfrom samscale.train import checkpoint\nsave = torch.save\n"
                     "def die(state, handle):\n    save(state, handle); handle.flush(); os._exit(9)\n"
                     "torch.save = die\ncheckpoint.save_checkpoint(sys.argv[1], {'run_id': 'x'})\n")
    assert subprocess.run([sys.executable, "-c", killed_writer, str(target)]).returncode == 9
    (left_by_kill,) = target.parent.glob("*.tmp")
    dead, live = owner_tag(_dead_pid()), owner_tag()
    elsewhere = f"owner-{_dead_pid()}-000000000000"  # a dead-looking pid of another host or namespace
    ckpts = target.parent
    assert is_temp_name(left_by_kill.name, target.name) and "owner-" in left_by_kill.name  # fileio's, tagged
    # left by older versions, an hour ago
    old_untagged = [ckpts / f"{run_id}.ptk3j4h5.tmp", ckpts / f".{run_id}.pt.k3j4h5.tmp"]
    paths = {
        "dead": [left_by_kill, ckpts / f".{run_id}.pt.{dead}.abc.tmp", *old_untagged,
                 work / f".study.yaml.{dead}.abc.tmp", work / f".report.new-{dead}-1a2b",
                 work / f".report.old-{dead}-1a2b-0", tmp_path / "tmp" / f"samscale-rendezvous-{dead}-xyz",
                 tmp_path / "data" / "mnist" / f".train-images-idx3-ubyte.gz.{dead}.q1w2.tmp"],
        "alive": [ckpts / f".{run_id}.pt.{live}.abc.tmp", ckpts / f".{run_id}.pt.{elsewhere}.abc.tmp",
                  ckpts / f"{run_id}.ptfresh.tmp", ckpts / f".{run_id}.pt.fresh.tmp", work / f".report.new-{live}-1a2b",
                  work / f".study.yaml.{live}.abc.tmp", tmp_path / "tmp" / f"samscale-rendezvous-{live}-xyz",
                  tmp_path / "tmp" / f"samscale-rendezvous-{elsewhere}-xyz",
                  tmp_path / "data" / "mnist" / f".train-images-idx3-ubyte.gz.{live}.q1w2.tmp"],
    }
    for path in paths["dead"][1:] + paths["alive"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".tmp" or path.parent.name == "mnist":
            path.write_bytes(b"partial")
        else:
            path.mkdir()
            (path / "store").write_text("x")
    for path in old_untagged:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    summary = sweep(study, work, SerialExecutor())
    assert summary.count("complete") == 1
    assert [path for path in paths["dead"] if path.exists()] == []
    assert [path for path in paths["alive"] if not path.exists()] == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
            except OSError:
                continue
            if int(stat[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_processes_of_a_multi_process_run_die_with_their_parent(tiny_config, tmp_path):
    pytest.importorskip("torch.distributed")
    study = _study(tiny_config, epochs=500, seeds=(0,))
    spec = study.expand()[0].model_copy(deep=True)
    spec = spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"nproc": 2})})
    (tmp_path / "tmp").mkdir()
    work = tmp_path / "work"
    script = ("import sys\nfrom samscale.spec.run import RunSpec\nfrom samscale.train.loop import train_run\n"
              "train_run(RunSpec.model_validate_json(sys.argv[1]), workdir=sys.argv[2])\n")
    parent = subprocess.Popen([sys.executable, "-c", script, spec.model_dump_json(), str(work)],
                              env={**os.environ, "TMPDIR": str(tmp_path / "tmp")}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    ranks: list[int] = []
    try:
        deadline = time.time() + 180
        while not checkpoint_path(work, spec.run_id).exists():  # rank 0 has trained an epoch: both ranks work
            assert time.time() < deadline and parent.poll() is None, "the run never started"
            time.sleep(0.05)
        ranks = _children(parent.pid)
        assert len(ranks) == 2
        parent.kill()  # SIGKILL: no chance to stop its processes itself
        parent.wait()
        deadline = time.time() + 30
        while any(_alive(pid) for pid in ranks) and time.time() < deadline:
            time.sleep(0.05)
        survivors = [pid for pid in ranks if _alive(pid)]
    finally:
        for pid in ranks:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
    assert survivors == []  # no rank lives on to overwrite the checkpoint while the next sweep trains the run
    (rendezvous,) = (tmp_path / "tmp").glob("samscale-rendezvous-*")  # left behind by the killed parent
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        assert rendezvous in clear_debris(work, RunStore(tmp_path / "s.db"))
    assert not rendezvous.exists()
