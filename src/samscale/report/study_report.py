"""Build a study's report from its work directory alone (study.yaml + the run store), finished or not."""
from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

from samscale.errors import ConfigError
from samscale.process import owner_tag
from samscale.report.paper_values import paper_gains
from samscale.report.render import write_report
from samscale.selection.scope import study_runs
from samscale.workdir import report_dir, store_path, study_path
from samscale.store import RunStore
from samscale.spec.study import SelectionRule, load_study


def _provenance(frame) -> tuple[str, str | None]:
    """Data source and substitution as recorded by the runs themselves."""
    sources = sorted({str(s) for s in frame.get("data_source", []) if isinstance(s, str)})
    substitutes = sorted({str(s) for s in frame.get("substitute_for", []) if isinstance(s, str)})
    return "; ".join(sources) or "(no run finished yet)", ", ".join(substitutes) or None


def _code_versions(frame) -> str:
    """The code versions that produced the study's finished runs, with how many runs each."""
    if frame.empty or "code_version" not in frame:
        return "(no run finished yet)"
    versions = frame["code_version"].dropna()
    if versions.empty:
        return "(not recorded)"
    counts = versions.value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    return "; ".join(f"{version} ({n} runs)" for version, n in counts.items()) + " — runs of several code versions"


COMPUTE_COLUMNS = ("device_name", "precision", "torch_version")


def _compute(frame) -> str:
    """Where and how the finished runs computed (device, precision policy, torch version), with how many runs each;
    runs recorded before these were kept show as not recorded."""
    if frame.empty or not set(COMPUTE_COLUMNS) & set(frame.columns):
        return "(not recorded)"
    finished = frame[frame["status"].isin(["complete", "diverged"])] if "status" in frame else frame
    if finished.empty:
        return "(no run finished yet)"
    columns = [c for c in COMPUTE_COLUMNS if c in finished]
    labels = finished[columns].astype(object).where(finished[columns].notna(), "?").astype(str)
    counts = labels.apply(lambda row: f"{row.get('device_name', '?')}, precision {row.get('precision', '?')}, "
                                      f"torch {row.get('torch_version', '?')}", axis=1).value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    return "; ".join(f"{label} ({n} runs)" for label, n in counts.items())


def build_study_report(workdir: str | Path, *, command: str, out: str | Path | None = None,
                       epoch: str | None = None, params: str | None = None) -> Path:
    """Write the report of the study in `workdir` to `workdir/report` (or `out`); returns the HTML page's path.

    `epoch` ('final' or 'best', i.e. early stopping on validation) overrides the study's selection epoch, so one
    set of runs can be reported both with and without early stopping. `params` ('total' or 'nonzero') overrides what
    the x-axis counts, so pruned runs can be compared by their non-zero weights."""
    workdir = Path(workdir)
    if not study_path(workdir).is_file():
        raise ConfigError(f"{workdir} is not a study work directory (no study.yaml); run `samscale sweep` first")
    study = load_study(study_path(workdir), check_runs=False)  # validated when it was swept; expanded below
    overrides = {key: value for key, value in (("epoch", epoch), ("params", params)) if value is not None}
    if overrides:
        study = study.model_copy(update={"selection": SelectionRule.parse({**study.selection.model_dump(),
                                                                           **overrides})})
    if not store_path(workdir).is_file():
        raise ConfigError(f"{workdir} has no run store ({store_path(workdir)}); run `samscale sweep` first")
    store = RunStore(store_path(workdir))
    scoped = study_runs(store.runs_frame(study.name), study, store_total=len(store.statuses()))
    frame = scoped.frame
    source, substitute = _provenance(frame)
    header = {
        "command": command,
        "study": study.name,
        "budget": study.budget or "(custom)",
        "data source": source,
        "code version": _code_versions(frame),
        "computed on": _compute(frame),
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
        "left out": scoped.header(),
    }
    notes = list(study.notes)
    if substitute:
        header["substitution"] = f"this run used a stand-in for {substitute}; see the data source above"
    if study.description:
        notes.insert(0, study.description.strip())
    paper = paper_gains(study.paper, study.selection.measure.kind) if study.paper else None
    return replace_folder(Path(out) if out else report_dir(workdir), lambda folder: write_report(
        folder,
        title=f"samscale — {study.name}",
        frame=frame,
        rule=study.selection,
        header=header,
        paper=paper,
        expected_seeds=study.expected_seeds(),
        notes=notes,
    ))


REPORT_MARKERS = ("report.html", "report.md")
"""Files that mark a folder as a report, which a rebuild may replace."""


def replace_folder(target: Path, write: Callable[[Path], Path]) -> Path:
    """Have `write` fill a fresh folder beside `target`, then swap it in for `target`; returns `write`'s path moved.

    Readers never see a half-written report, and writers running at once never share a folder: each writes its own
    and the last to finish wins (old folder renamed aside, new one renamed in, old one deleted). An existing `target`
    that does not look like a report (a non-empty folder without report.html / report.md, or a file) is refused.
    """
    target = Path(target)
    if target.is_file() or (target.is_dir() and any(target.iterdir())
                            and not any((target / name).exists() for name in REPORT_MARKERS)):
        raise ConfigError(f"refusing to replace {target}: it exists and is not a report folder (no "
                          f"{' or '.join(REPORT_MARKERS)}); choose another output folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    fresh = target.with_name(f".{target.name}.new-{owner_tag()}-{token}")  # tagged: a sweep clears it if we die
    fresh.mkdir()
    try:
        written = write(fresh)
        for attempt in range(100):
            aside = target.with_name(f".{target.name}.old-{owner_tag()}-{token}-{attempt}")
            try:
                os.rename(target, aside)
            except FileNotFoundError:
                aside = None
            try:
                os.rename(fresh, target)
                break
            except OSError as err:  # another writer swapped its report in between: move that one aside too
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            finally:
                if aside is not None:
                    shutil.rmtree(aside, ignore_errors=True)
        else:
            raise OSError(f"could not swap the new report into {target}: other writers kept replacing it")
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return target / written.relative_to(fresh)
