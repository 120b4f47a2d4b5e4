"""What a run tells the outside world while it trains: three events, delivered to one callback.

The trainer never writes the run store; whoever runs it (an executor, the CLI, a notebook) decides what to do with
the events. `RunStarted` carries the history restored from a checkpoint, so a listener that lost epochs in a crash
can rewrite them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union

from samscale.spec.run import RunSpec


@dataclass(frozen=True)
class RunStarted:
    """The run is built (and resumed, if it had a checkpoint): its spec, size and the epochs already done."""

    spec: RunSpec
    n_params: int
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class EpochEnded:
    """One epoch finished; `row` holds its metrics (train, val, test, lr of that epoch, seconds)."""

    run_id: str
    epoch: int
    row: dict[str, float]


@dataclass(frozen=True)
class RunEnded:
    """The run ended (`complete` or `diverged`) with its final summary metrics."""

    run_id: str
    status: str
    final: dict[str, Any]


RunEvent = Union[RunStarted, EpochEnded, RunEnded]
EventHandler = Callable[[RunEvent], None]
