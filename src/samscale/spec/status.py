"""The one run-status type shared by the trainer, the store, the executors and selection."""
from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    """Where a run stands. Its value is the string stored in the run store."""

    PENDING = "pending"  # registered, never started
    RUNNING = "running"  # claimed by a live process (or by one that died; then the next sweep takes it over)
    COMPLETE = "complete"  # trained to the end
    DIVERGED = "diverged"  # stopped on a non-finite loss: a finished run that lost, never selected
    FAILED = "failed"  # raised an exception; retried by the next sweep
    BUSY = "busy"  # (sweep outcome only) held by another live sweep, not run here
    LOST = "lost"  # (sweep outcome only) taken over by another sweep while this one held it; this one stopped it

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """Complete or diverged: a sweep never trains it again."""
        return self in FINISHED


#: Statuses a run can have in the store.
STORED = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPLETE, RunStatus.DIVERGED, RunStatus.FAILED)
#: Finished runs: kept by sweeps, read by selection.
FINISHED = (RunStatus.COMPLETE, RunStatus.DIVERGED)
#: Runs that are not finished; any of them marks a size's summary as partial.
UNFINISHED = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.FAILED)
