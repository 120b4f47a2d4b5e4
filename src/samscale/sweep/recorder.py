"""How executors write the run store: the trainer's events, recorded; and a heartbeat while a run is held.

Executors are the only writers of the store. Serial and local-pool executors record each event as it happens, in the
process that trains; the Ray executor collects a run's events on the worker and replays them in the driver. Both go
through `StoreRecorder`, so a run is recorded the same way whatever ran it.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from samscale.spec.status import RunStatus
from samscale.store import RunStore
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


class StoreRecorder:
    """An event handler for `train_run` that writes the run's registration, epochs and end into a store."""

    def __init__(self, store: RunStore, version: str | None = None):
        self.store = store
        self.version = version or code_version()

    def __call__(self, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            self.store.register(event.spec, n_params=event.n_params)
            for row in event.history:  # epochs checkpointed before a crash but never recorded are written now
                self.store.record_epoch(event.spec.run_id, int(row["epoch"]), row)
        elif isinstance(event, EpochEnded):
            self.store.record_epoch(event.run_id, event.epoch, event.row)
        elif isinstance(event, RunEnded):
            self.store.finish(event.run_id, event.status, event.final, code_version=self.version)

    def replay(self, events: Iterable[RunEvent]) -> None:
        """Record events collected elsewhere (a Ray worker), in order."""
        for event in events:
            self(event)

    def failed(self, run_id: str, error: str) -> None:
        """Record that a run raised instead of ending."""
        self.store.finish(run_id, RunStatus.FAILED, error=error, code_version=self.version)


class Heartbeat:
    """While open, refresh the heartbeat of the held runs every `interval_s` seconds from a background thread.

    A run whose holder stops beating for the store's `stale_after_s` is taken over by the next sweep, even when the
    holder ran on another host (where its process cannot be checked).
    """

    def __init__(self, store: RunStore, run_ids: Iterable[str] = (), interval_s: float | None = None):
        self.store = store
        self.run_ids: set[str] = set(run_ids)
        self.interval_s = interval_s if interval_s is not None else max(1.0, store.stale_after_s / 6)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="samscale-heartbeat", daemon=True)

    def hold(self, run_id: str) -> None:
        """Start beating for `run_id`."""
        with self._lock:
            self.run_ids.add(run_id)

    def release(self, run_id: str) -> None:
        """Stop beating for `run_id`."""
        with self._lock:
            self.run_ids.discard(run_id)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                held = sorted(self.run_ids)
            try:
                self.store.heartbeat(*held)
            except Exception:  # a busy store must not kill the run; the next beat tries again
                pass

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
