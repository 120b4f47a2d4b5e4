"""Sweep: run every RunSpec of a study that the store does not already hold as finished, resumably."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from samscale.models.registry import param_count
from samscale.study.executors import RunOutcome, store_path_in
from samscale.study.spec import RunSpec
from samscale.study.store import FINISHED, RunStore
from samscale.study.study import Study

ProgressCallback = Callable[[RunOutcome, int, int], None]


@dataclass
class SweepSummary:
    """Counts of a sweep: runs in the study, already finished before it, and how this sweep's runs ended."""

    total: int
    skipped: int
    outcomes: list[RunOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)


def estimated_cost(spec: RunSpec) -> float:
    """Relative cost of a run (parameters × epochs × passes per step), to start the longest runs first."""
    try:
        n_params = param_count(spec.model.family, spec.model.size, **spec.model.options)
    except (TypeError, ValueError, KeyError):
        n_params = 1
    return float(n_params) * spec.train.epochs * (2 if spec.optim.is_sam else 1)


def prepare(study: Study, workdir: str | Path) -> tuple[RunStore, list[RunSpec]]:
    """Open the work directory's store, save the study beside it, and register every run of the study."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "study.yaml").write_text(study.to_yaml())
    store = RunStore(store_path_in(workdir))
    specs = study.expand()
    for spec in specs:
        store.register(spec, study=study.name)
    return store, specs


def sweep(study: Study, workdir: str | Path, executor, on_result: ProgressCallback | None = None) -> SweepSummary:
    """Run the study's unfinished runs with `executor`; finished runs are skipped, interrupted ones resume."""
    store, specs = prepare(study, workdir)
    todo = [spec for spec in specs if store.status(spec.run_id) not in FINISHED]
    todo.sort(key=estimated_cost, reverse=True)  # longest first: the pool's last runs are short ones
    summary = SweepSummary(total=len(specs), skipped=len(specs) - len(todo))
    for outcome in executor.run(todo, str(store.path), str(workdir)):
        summary.outcomes.append(outcome)
        if on_result is not None:
            on_result(outcome, summary.skipped + len(summary.outcomes), summary.total)
    return summary
