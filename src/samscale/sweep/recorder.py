"""How executors write the run store: the trainer's events, recorded; and a heartbeat while a run is held.

Executors are the only writers of the store. Serial and local-pool executors record each event as it happens, in the
process that trains; the Ray executor collects a run's events on the worker and replays them in the driver. Both go
through `StoreRecorder`, so a run is recorded the same way whatever ran it. Every write names the run's `Claim`:
once another sweep has taken a run over, the old holder's writes raise `ClaimLost` and nothing of it is stored.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from samscale.errors import ClaimLost
from samscale.spec.run import RunSpec
from samscale.spec.status import RunStatus
from samscale.store import Claim, RunStore
from samscale.train.events import EpochEnded, RunEnded, RunEvent, RunStarted
from samscale.version import code_version


@dataclass
class RunOutcome:
    """How one run of a sweep ended: complete, diverged, failed, or busy (held by another live sweep)."""

    run_id: str
    label: str
    status: str
    error: str | None = None
    final: dict | None = None


LOG = logging.getLogger("samscale.sweep")


def lost_outcome(spec: RunSpec, lost: ClaimLost) -> RunOutcome:
    """The outcome of a run this process stopped because another sweep took it over (logged as a warning)."""
    LOG.warning("stopped run %s: %s", spec.run_id, lost)
    return RunOutcome(spec.run_id, spec.label(), RunStatus.LOST.value, error=str(lost))


def failed_outcome(recorder: "StoreRecorder", spec: RunSpec, error: str) -> RunOutcome:
    """Record that a run raised `error` and return its outcome (`lost` if it was taken over meanwhile)."""
    try:
        recorder.failed(spec.run_id, error)
    except ClaimLost as lost:
        return lost_outcome(spec, lost)
    return RunOutcome(spec.run_id, spec.label(), RunStatus.FAILED.value, error=error)


class StoreRecorder:
    """An event handler for `train_run` that writes the events of the runs it holds (`claims`) into a store.

    A write for a run that was taken over raises `samscale.errors.ClaimLost`, which ends that run in its holder."""

    def __init__(self, store: RunStore, *claims: Claim, version: str | None = None):
        self.store = store
        self.claims = {claim.run_id: claim for claim in claims}
        self.version = version or code_version()

    def _claim(self, run_id: str) -> Claim:
        try:
            return self.claims[run_id]
        except KeyError:
            raise KeyError(f"run {run_id} was not claimed by this recorder's holder; claim it first") from None

    def __call__(self, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            claim = self._claim(event.spec.run_id)
            self.store.register(event.spec, n_params=event.n_params)
            for row in event.history:  # epochs checkpointed before a crash but never recorded are written now
                self.store.record_epoch(claim, int(row["epoch"]), row)
        elif isinstance(event, EpochEnded):
            self.store.record_epoch(self._claim(event.run_id), event.epoch, event.row)
        elif isinstance(event, RunEnded):
            self.store.finish(self._claim(event.run_id), event.status, event.final, code_version=self.version)

    def replay(self, events: Iterable[RunEvent]) -> None:
        """Record events collected elsewhere (a Ray worker), in order."""
        for event in events:
            self(event)

    def failed(self, run_id: str, error: str) -> None:
        """Record that a run raised instead of ending (ClaimLost if the run was taken over meanwhile)."""
        self.store.finish(self._claim(run_id), RunStatus.FAILED, error=error, code_version=self.version)


class Heartbeat:
    """While open, refresh the heartbeat of the held runs every `interval_s` seconds from a background thread.

    A run whose holder stops beating for the store's `stale_after_s` is taken over by the next sweep, even when the
    holder ran on another host (where its process cannot be checked). A beat that fails (a busy or unreachable
    store) is logged as a warning and retried at the next beat; a run found taken over is logged and no longer beaten
    for (its holder learns it at its next write, which is refused).
    """

    def __init__(self, store: RunStore, claims: Iterable[Claim] = (), interval_s: float | None = None):
        self.store = store
        self.claims: dict[str, Claim] = {claim.run_id: claim for claim in claims}
        self.lost: set[str] = set()
        self.interval_s = interval_s if interval_s is not None else max(1.0, store.stale_after_s / 6)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="samscale-heartbeat", daemon=True)

    def hold(self, claim: Claim) -> None:
        """Start beating for the claimed run."""
        with self._lock:
            self.claims[claim.run_id] = claim

    def release(self, run_id: str) -> None:
        """Stop beating for `run_id`."""
        with self._lock:
            self.claims.pop(run_id, None)

    def beat(self) -> None:
        """One beat for every held run now (the background thread calls this every `interval_s`)."""
        with self._lock:
            held = list(self.claims.values())
        try:
            lost = self.store.heartbeat(*held)
        except Exception as err:  # a busy store must not kill the run; the next beat tries again
            LOG.warning("heartbeat of %d run(s) in %s failed (%s: %s); retrying in %.0f s", len(held),
                        self.store.path, type(err).__name__, err, self.interval_s)
            return
        for run_id in lost:
            LOG.warning("run %s was taken over by another sweep; this process no longer holds it", run_id)
            with self._lock:
                self.lost.add(run_id)
                self.claims.pop(run_id, None)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
