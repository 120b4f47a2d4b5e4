"""The SQLite run store: registration, atomic claims, history, several writer processes."""
import multiprocessing as mp

import pytest

from samscale.spec.run import build_spec
from samscale.store import RunStore


def _spec(seed=0):
    return build_spec({"train": {"seed": seed}})


def test_register_claim_record_finish(tmp_path):
    store = RunStore(tmp_path / "s.db")
    spec = _spec()
    run_id = store.register(spec, study="demo")
    assert store.register(spec, study="demo") == run_id  # idempotent
    assert store.status(run_id) == "pending"
    claim = store.claim(run_id)
    assert claim and claim.attempt == 1
    assert not store.claim(run_id)  # this live process holds it
    store.record_epoch(claim, 1, {"epoch": 1, "train_loss": 0.5, "val_acc": 0.9})
    store.record_epoch(claim, 1, {"epoch": 1, "train_loss": 0.4, "val_acc": 0.9})  # rewrite, not duplicate
    store.record_epoch(claim, 2, {"epoch": 2, "train_loss": 0.3, "val_acc": 0.95})
    with pytest.raises(ValueError, match="unknown status"):
        store.finish(claim, "done")
    store.finish(claim, "complete", {"final_test_acc": 0.93, "n_params": 10})
    assert not store.claim(run_id)  # finished runs are never claimed again
    history = store.history(run_id)
    assert list(history["epoch"]) == [1, 2] and list(history["train_loss"]) == [0.4, 0.3]
    frame = store.runs_frame("demo")
    row = frame.iloc[0]
    assert row["run_id"] == run_id and row["status"] == "complete" and row["final_test_acc"] == 0.93
    assert row["optim.name"] == "sgd" and row["epochs_done"] == 2 and row["attempts"] == 1
    assert store.find(run_id[:6]) == run_id


def test_run_held_by_dead_process_is_taken_over(tmp_path):
    store = RunStore(tmp_path / "s.db")
    run_id = store.register(_spec())
    child = mp.get_context("spawn").Process(target=_claim_only, args=(str(store.path), run_id))
    child.start()
    child.join()
    assert store.status(run_id) == "running"
    assert store.claim(run_id)  # the owner's pid is gone: resumable at once
    assert store.runs_frame().iloc[0]["attempts"] == 2


def _claim_only(path, run_id):
    RunStore(path).claim(run_id)


def _claim_all(path, run_ids, queue):
    store = RunStore(path)
    queue.put([run_id for run_id in run_ids if store.claim(run_id)])


def test_concurrent_claims_never_overlap(tmp_path):
    store = RunStore(tmp_path / "s.db")
    run_ids = [store.register(_spec(seed)) for seed in range(40)]
    context = mp.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_claim_all, args=(str(store.path), run_ids, queue)) for _ in range(3)]
    for w in workers:
        w.start()
    claimed = [queue.get(timeout=60) for _ in workers]
    for w in workers:
        w.join()
    flat = [run_id for part in claimed for run_id in part]
    assert sorted(flat) == sorted(run_ids)  # each run claimed exactly once
