"""Fenced run ownership: a run taken over from a holder that stopped beating (SIGSTOP, a paused VM, a sleeping
laptop) is written by its new holder only; the old one, once awake, stops that run, says so and writes nothing. Also
the owner records that make a pid's death provable, and checkpoints that know their origin (run, attempt, code)."""
from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import seed_study
from samscale.errors import ClaimLost, ConfigError
from samscale.process import machine_key
from samscale.spec.run import build_spec
from samscale.spec.study import Study
from samscale.store import RunStore
from samscale.sweep.executors import SerialExecutor
from samscale.sweep.recorder import Heartbeat
from samscale.sweep.sweep import sweep
from samscale.train.checkpoint import load_checkpoint
from samscale.train.loop import train_run
from samscale.version import code_version
from samscale.workdir import checkpoint_path, store_path

COLUMNS = ["run_id", "status", "final_train_loss", "final_val_acc", "final_test_acc", "best_epoch", "epochs_done"]


def _study(tiny_config: dict, epochs: int = 2, seeds=(0, 1), train_subset: int | None = None) -> Study:
    return seed_study("owned", tiny_config, epochs, seeds, train_subset)


def _table(workdir: Path):
    frame = RunStore(store_path(workdir)).runs_frame("owned")
    return frame[COLUMNS].sort_values("run_id").reset_index(drop=True)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _stale(store: RunStore, run_id: str, age_s: float = 60.0) -> None:
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET heartbeat = ? WHERE run_id = ?", (time.time() - age_s, run_id))


def test_every_write_of_a_taken_over_holder_is_refused(tiny_config, tmp_path, caplog):
    store = RunStore(tmp_path / "s.db", stale_after_s=5.0)
    spec = build_spec(tiny_config)
    run_id = store.register(spec)
    old = store.claim(run_id)
    store.record_epoch(old, 1, {"epoch": 1, "train_loss": 9.0})
    assert store.claim(run_id) is None  # held by this live process, beating
    _stale(store, run_id)  # the holder stopped beating (SIGSTOP, a paused VM): taken over
    new = store.claim(run_id)
    assert (old.attempt, new.attempt) == (1, 2) and new.token != old.token
    store.record_epoch(new, 1, {"epoch": 1, "train_loss": 0.5})
    with pytest.raises(ClaimLost, match=r"attempt 1\) is no longer held.*attempt 2"):
        store.record_epoch(old, 2, {"epoch": 2, "train_loss": 9.0})
    with pytest.raises(ClaimLost):
        store.finish(old, "complete", {"final_test_acc": 0.99})
    with pytest.raises(ClaimLost):
        with store.hold(old):
            pass
    assert store.heartbeat(old, new) == [run_id]  # the old holder's beat is not written, the new one's is
    with caplog.at_level(logging.WARNING, logger="samscale.sweep"):  # a beat of the old holder says it lost the run
        beat = Heartbeat(store, [old])
        beat.beat()
    assert beat.lost == {run_id} and "taken over" in caplog.text
    store.record_epoch(new, 2, {"epoch": 2, "train_loss": 0.4})
    store.finish(new, "complete", {"final_test_acc": 0.5})
    history = store.history(run_id)
    assert list(history["train_loss"]) == [0.5, 0.4] and set(history["attempt"]) == {2}
    row = store.runs_frame().iloc[0]
    assert row["status"] == "complete" and row["final_test_acc"] == 0.5 and row["attempts"] == 2
    with pytest.raises(ClaimLost, match="complete now"):
        store.record_epoch(new, 3, {"epoch": 3})


def test_failed_heartbeats_are_logged_not_swallowed(tiny_config, tmp_path, caplog, monkeypatch):
    store = RunStore(tmp_path / "s.db")
    claim = store.claim(store.register(build_spec(tiny_config)))

    def unreachable(*claims):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "heartbeat", unreachable)
    with caplog.at_level(logging.WARNING, logger="samscale.sweep"):
        Heartbeat(store, [claim]).beat()
    assert "heartbeat of 1 run(s)" in caplog.text and "disk I/O error" in caplog.text


def test_a_pid_is_believed_dead_only_on_its_own_host_boot_and_pid_namespace(tiny_config, tmp_path):
    store = RunStore(tmp_path / "s.db")
    run_id = store.register(build_spec(tiny_config))
    dead = _dead_pid()
    host = socket.gethostname()
    other_namespace = "0123456789ab" if machine_key() != "0123456789ab" else "ba9876543210"
    for owner in (f"{host}:{dead}",  # a record naming no namespace (an older store, or another container)
                  f"{host}:{dead}:{other_namespace}"):  # same host name, another PID namespace or boot
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE runs SET status = 'running', owner = ?, heartbeat = ?", (owner, time.time()))
        assert store.claim(run_id) is None, owner  # its pid proves nothing here: wait for a stale heartbeat
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET owner = ?", (f"{host}:{dead}:{machine_key()}",))
    assert store.claim(run_id) is not None  # this namespace's pid, gone: taken over at once


def _sweep_command(study_path: Path, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "samscale.cli", "sweep", str(study_path), "--out", str(workdir),
            "--executor", "serial", "--threads", "1", "--no-report"]


def _store_unlocked(path: Path) -> bool:
    """Whether no process holds the store's write lock right now."""
    db = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()


def _running_part_way(path: Path) -> bool:
    """Whether a run is held after at least one epoch (a cheap query: the sweep is not slowed down)."""
    with sqlite3.connect(path, timeout=5.0) as db:
        return db.execute("SELECT COUNT(*) FROM runs WHERE status = 'running' AND epochs_done >= 1").fetchone()[0] > 0


def _held_by(store: RunStore, pid: int) -> list[str]:
    with sqlite3.connect(store.path, timeout=5.0) as db:
        rows = db.execute("SELECT run_id, owner FROM runs WHERE status = 'running'").fetchall()
    return [run_id for run_id, owner in rows if owner and owner.split(":")[1] == str(pid)]


def _wait(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, f"never reached: {what}"
        time.sleep(0.02)


def _digests(workdir: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted((workdir / "checkpoints").glob("*"))}


def test_chaos_a_stopped_sweep_is_taken_over_and_the_woken_loser_writes_nothing(tiny_config, tmp_path):
    stale_s = 2.0
    study = _study(tiny_config, epochs=5, seeds=(0, 1), train_subset=2000)
    path = tmp_path / "study.yaml"
    path.write_text(study.to_yaml())
    work = tmp_path / "work"
    env = {**os.environ, "SAMSCALE_STALE_AFTER_S": str(stale_s)}
    out_file, err_file = tmp_path / "first.out", tmp_path / "first.err"
    with open(out_file, "w") as out, open(err_file, "w") as err:
        first = subprocess.Popen(_sweep_command(path, work), env=env, stdout=out, stderr=err)
    try:
        _wait(lambda: store_path(work).exists(), "the first sweep created its store")
        store = RunStore(store_path(work), stale_after_s=stale_s)
        while True:  # stop the first sweep mid-run, outside any store transaction
            _wait(lambda: _running_part_way(store.path), "the first sweep is part-way through a run")
            first.send_signal(signal.SIGSTOP)
            time.sleep(0.05)
            held = _held_by(store, first.pid)
            if held and _store_unlocked(store.path):
                break
            first.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        # its heartbeat goes stale while it sleeps: a second sweep takes its run over and finishes the study
        _wait(lambda: all(time.time() - store._rows("SELECT heartbeat FROM runs WHERE run_id = ?", (run_id,))[0][0]
                          > stale_s for run_id in held), "the stopped sweep's heartbeat went stale")
        second = subprocess.run(_sweep_command(path, work), env=env, capture_output=True, text=True)
        assert second.returncode == 0, second.stderr[-3000:]
        after_second = _digests(work)
        first.send_signal(signal.SIGCONT)  # the loser wakes up mid-epoch, still believing it holds its run
        first.wait(timeout=300)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
            first.wait()
    out, err = out_file.read_text(), err_file.read_text()
    assert first.returncode == 0, err[-3000:]
    assert "lost" in out and "no longer held by this process" in err  # it says it lost the run

    reference = tmp_path / "reference"
    sweep(study, reference, SerialExecutor())
    assert _table(work).equals(_table(reference))  # final metrics of an uninterrupted sweep
    assert _digests(work) == after_second  # the loser overwrote no checkpoint (nor left a temporary file)
    store = RunStore(store_path(work))
    frame = store.runs_frame().set_index("run_id")
    assert sorted(frame.index[frame["attempts"] == 2]) == sorted(held)  # the taken runs, and only they
    assert (frame.loc[~frame.index.isin(held), "attempts"] == 1).all()
    for run_id, attempts in frame["attempts"].items():
        history = store.history(run_id)
        assert set(history["attempt"]) == {attempts}  # the whole history from exactly one holder: the last
        expected = RunStore(store_path(reference)).history(run_id)
        assert history.drop(columns=["seconds", "attempt"]).equals(expected.drop(columns=["seconds", "attempt"]))
        state = load_checkpoint(checkpoint_path(work, run_id))
        assert (state["run_id"], state["attempt"], state["code_version"]) == (run_id, attempts, code_version())


def test_checkpoints_record_their_origin_and_resume_refuses_other_code(tiny_config, tmp_path):
    store = RunStore(tmp_path / "s.db")
    spec = build_spec(tiny_config, ["train.epochs=3"])
    claim = store.claim(store.register(spec))
    result = train_run(spec, workdir=tmp_path, max_epochs=1, fence=store.fence([claim]))
    assert result.status == "running"
    path = checkpoint_path(tmp_path, spec.run_id)
    state = load_checkpoint(path)
    assert (state["run_id"], state["attempt"], state["code_version"]) == (spec.run_id, 1, code_version())
    state["code_version"] = "0.0.1+g0123456789ab"
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"code version 0\.0\.1\+g0123456789ab, not by this one"):
        train_run(spec, workdir=tmp_path)
    assert load_checkpoint(path)["epoch"] == 1  # refused, untouched


def test_a_kill_between_the_two_steps_of_rerun_never_finishes_a_run_from_old_weights(tiny_config, tmp_path,
                                                                                      monkeypatch):
    study = _study(tiny_config, epochs=2)
    sweep(study, tmp_path / "reference", SerialExecutor())
    work = tmp_path / "work"
    sweep(study, work, SerialExecutor())
    old = "0.0.1+g0123456789ab"
    with sqlite3.connect(store_path(work)) as db:  # the runs and their final checkpoints come from older code,
        db.execute("UPDATE runs SET code_version = ?", (old,))
    for path in (work / "checkpoints").glob("*.pt"):  # whose weights differ from what this code trains
        state = load_checkpoint(path)
        state.update(code_version=old, model={name: torch.zeros_like(value) for name, value in state["model"].items()})
        torch.save(state, path)

    steps: list[str] = []

    def step(kind: str) -> None:  # the process is killed as soon as the second of the two steps begins
        if steps and steps[0] != kind:
            raise KeyboardInterrupt(f"killed between {steps[0]} and {kind}")
        steps.append(kind)

    real_reset, real_unlink = RunStore.reset, Path.unlink

    def reset(self, run_ids):
        step("reset")
        return real_reset(self, run_ids)

    def unlink(self, *args, **kwargs):
        if self.parent.name == "checkpoints" and self.suffix == ".pt":
            step("delete checkpoints")
        return real_unlink(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(RunStore, "reset", reset)
        patch.setattr(Path, "unlink", unlink)
        with pytest.raises(KeyboardInterrupt):
            sweep(study, work, SerialExecutor(), other_versions="rerun")
    assert len(set(steps)) == 1  # the kill came between the steps

    sweep(study, work, SerialExecutor(), other_versions="rerun")  # the user runs the same command again
    assert _table(work).equals(_table(tmp_path / "reference"))  # trained anew, never finished from old weights
    frame = RunStore(store_path(work)).runs_frame()
    assert (frame["code_version"] == code_version()).all() and (frame["attempts"] == 2).all()
    for run_id in frame["run_id"]:
        assert load_checkpoint(checkpoint_path(work, run_id))["code_version"] == code_version()


def test_interrupted_runs_with_checkpoints_of_other_code_are_refused_or_trained_anew(tiny_config, tmp_path):
    study = _study(tiny_config, epochs=3)
    sweep(study, tmp_path / "reference", SerialExecutor())
    work = tmp_path / "work"
    spec = study.expand()[0]
    train_run(spec, workdir=work, max_epochs=2)  # interrupted after two epochs, by older code
    path = checkpoint_path(work, spec.run_id)
    state = load_checkpoint(path)
    state["code_version"] = "0.0.1+g0123456789ab"
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"1 interrupted runs .* code version 0\.0\.1\+g0123456789ab.*"
                                          r"--rerun-other-versions"):
        sweep(study, work, SerialExecutor())
    assert not store_path(work).exists() and load_checkpoint(path)["epoch"] == 2  # refused before any write
    summary = sweep(study, work, SerialExecutor(), other_versions="rerun")
    assert summary.count("complete") == 2
    assert _table(work).equals(_table(tmp_path / "reference"))
    assert load_checkpoint(path)["code_version"] == code_version()
