"""Sweep: run every RunSpec of a study that the store does not already hold as finished, resumably.

Finished runs are kept only if the same code version produced them (`samscale.version`): by default a sweep refuses
to mix runs of another code version into a study, and says so; `other_versions="reuse"` keeps them as they are,
`"rerun"` trains them again with this code (their checkpoints are deleted before the store forgets them, so a kill
in between leaves finished runs of the old version, never a pending run beside an old finished checkpoint).
Interrupted runs whose checkpoint another code version wrote are never resumed: a sweep refuses them, and says so,
unless told to train them anew (`"rerun"`).

Before it plans, a sweep clears what killed processes left in the work directory (`samscale.sweep.debris`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from samscale.errors import ConfigError
from samscale.models.registry import param_count
from samscale.spec.run import RunSpec
from samscale.spec.status import FINISHED
from samscale.spec.study import Study
from samscale.store import RunStore
from samscale.train.checkpoint import load_checkpoint
from samscale.sweep.debris import clear_debris
from samscale.sweep.executors import RunOutcome
from samscale.sweep.preflight import preflight
from samscale.sweep.study_file import save_study
from samscale.version import code_version
from samscale.workdir import checkpoint_path, store_path

ProgressCallback = Callable[[RunOutcome, int, int], None]
OtherVersions = Literal["refuse", "reuse", "rerun"]
OTHER_VERSIONS: tuple[str, ...] = ("refuse", "reuse", "rerun")


@dataclass
class SweepSummary:
    """Counts of a sweep: runs in the study, already finished before it, and how this sweep's runs ended."""

    total: int
    skipped: int
    outcomes: list[RunOutcome] = field(default_factory=list)
    rerun_other_versions: int = 0
    reused_other_versions: int = 0

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)


def estimated_cost(spec: RunSpec) -> float:
    """Relative cost of a run (parameters × epochs × passes per step), to start the longest runs first."""
    try:
        n_params = param_count(spec.model.family, spec.model.size, **spec.model.options)
    except (TypeError, ValueError, KeyError):
        n_params = 1
    train_size = spec.data.train_subset or 60_000  # the size of the largest offline training sets
    return float(n_params) * spec.train.epochs * train_size * (2 if spec.optim.is_sam else 1)


def prepare(study: Study, workdir: str | Path, specs: list[RunSpec] | None = None) -> tuple[RunStore, list[RunSpec]]:
    """Save the study in the work directory (refusing one that holds another study), open its store and register
    every run of the study.

    The study is expanded (every point validated) before anything is written, so a bad study leaves no trace.
    """
    specs = study.expand() if specs is None else specs
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    save_study(study, workdir)  # refuses a folder that holds another study, before its store is touched
    store = RunStore(store_path(workdir))
    store.register_study(specs, study.name)
    return store, specs


def other_version_runs(store: RunStore, specs: list[RunSpec]) -> dict[str, str | None]:
    """Finished runs among `specs` that another code version produced: run_id → that version."""
    current = code_version()
    statuses = store.statuses()
    finished = [spec.run_id for spec in specs if statuses.get(spec.run_id) in FINISHED]
    return {run_id: version for run_id, version in store.code_versions(finished).items() if version != current}


def interrupted_other_version_runs(store: RunStore | None, specs: list[RunSpec],
                                   workdir: str | Path) -> dict[str, str]:
    """Unfinished runs among `specs`, held by no live process, whose checkpoint another code version wrote:
    run_id → that version. A checkpoint that cannot be read is left to its run, which fails with its own error."""
    statuses, held = (store.statuses(), store.held_runs()) if store is not None else ({}, set())
    found = {}
    for spec in specs:
        path = checkpoint_path(workdir, spec.run_id)
        if statuses.get(spec.run_id) in FINISHED or spec.run_id in held or not path.is_file():
            continue
        try:
            state = load_checkpoint(path)
        except ConfigError:
            continue
        if state is not None and state.get("code_version") != code_version():
            found[spec.run_id] = state.get("code_version") or "unrecorded"
    return found


def _describe(others: dict[str, str | None]) -> str:
    versions = sorted({version or "unrecorded" for version in others.values()})
    return f"{len(others)} finished runs of this study were produced by code version {', '.join(versions)}"


def plan(study: Study, workdir: str | Path, other_versions: OtherVersions = "refuse", *,
         check_here: bool = True) -> tuple[RunStore, list[RunSpec], dict]:
    """(store, runs to train longest first, what was decided about runs of other code versions).

    With `check_here` (runs train on this machine) the unfinished runs' devices, data and splits are checked first
    (`preflight`), so a mistake stops the sweep before anything is written."""
    if other_versions not in OTHER_VERSIONS:
        raise ConfigError(f"other_versions must be one of {', '.join(OTHER_VERSIONS)}, got {other_versions!r}")
    specs = study.expand()
    existing = RunStore(store_path(workdir)) if store_path(workdir).is_file() else None
    statuses = existing.statuses() if existing is not None else {}
    if check_here:
        preflight([spec for spec in specs if statuses.get(spec.run_id) not in FINISHED])
    others = other_version_runs(existing, specs) if existing is not None else {}
    interrupted = interrupted_other_version_runs(existing, specs, workdir)
    if others and other_versions == "refuse":  # refuse before anything is written
        raise ConfigError(
            f"{_describe(others)}, not by this one ({code_version()}); pass --reuse-other-versions to keep them in "
            "the study as they are, or --rerun-other-versions to train them again with this code"
        )
    if interrupted and other_versions != "rerun":
        raise ConfigError(
            f"{len(interrupted)} interrupted runs of this study have checkpoints of code version "
            f"{', '.join(sorted(set(interrupted.values())))}, not of this one ({code_version()}), and cannot be "
            "resumed; pass --rerun-other-versions to train them anew with this code"
        )
    store, specs = prepare(study, workdir, specs)
    for run_id in interrupted:  # first the checkpoints, then the history they wrote
        checkpoint_path(workdir, run_id).unlink(missing_ok=True)
    store.reset(list(interrupted))
    cleared = clear_debris(workdir, store)
    decision = {"total": len(specs), "other_versions": len(others), "action": other_versions, "message": "",
                "cleared": [str(path) for path in cleared]}
    if others:
        described = _describe(others)
        if other_versions == "rerun":
            for run_id in others:  # first the checkpoints: a finished one must never meet a pending run
                checkpoint_path(workdir, run_id).unlink(missing_ok=True)
            store.reset(list(others))
            decision["message"] = f"{described}; training them again with {code_version()}"
        else:
            decision["message"] = f"{described}; reusing them as they are (--reuse-other-versions)"
    if interrupted:
        anew = f"{len(interrupted)} interrupted runs had checkpoints of another code version; training them anew"
        decision["message"] = "; ".join(filter(None, [decision["message"], anew]))
    statuses = store.statuses()
    todo = [spec for spec in specs if statuses.get(spec.run_id) not in FINISHED]
    todo.sort(key=estimated_cost, reverse=True)  # longest first: the pool's last runs are short ones
    return store, todo, decision


def sweep(study: Study, workdir: str | Path, executor, on_result: ProgressCallback | None = None,
          other_versions: OtherVersions = "refuse") -> SweepSummary:
    """Run the study's unfinished runs with `executor`; finished runs are skipped, interrupted ones resume."""
    store, todo, decision = plan(study, workdir, other_versions, check_here=getattr(executor, "runs_here", True))
    total = decision["total"]
    summary = SweepSummary(total=total, skipped=total - len(todo))
    if decision["action"] == "rerun":
        summary.rerun_other_versions = decision["other_versions"]
    elif decision["action"] == "reuse":
        summary.reused_other_versions = decision["other_versions"]
    for outcome in executor.run(todo, str(store.path), str(workdir)):
        summary.outcomes.append(outcome)
        if on_result is not None:
            on_result(outcome, summary.skipped + len(summary.outcomes), summary.total)
    return summary

