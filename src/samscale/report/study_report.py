"""Build a study's report from its work directory alone (study.yaml + the run store), finished or not."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from samscale.errors import ConfigError
from samscale.report.paper_values import paper_gains
from samscale.report.render import write_report
from samscale.workdir import report_dir, store_path, study_path
from samscale.store import RunStore
from samscale.spec.study import load_study


def _provenance(frame) -> tuple[str, str | None]:
    """Data source and substitution as recorded by the runs themselves."""
    sources = sorted({str(s) for s in frame.get("data_source", []) if isinstance(s, str)})
    substitutes = sorted({str(s) for s in frame.get("substitute_for", []) if isinstance(s, str)})
    return "; ".join(sources) or "(no run finished yet)", ", ".join(substitutes) or None


def build_study_report(workdir: str | Path, *, command: str, out: str | Path | None = None) -> Path:
    """Write the report of the study in `workdir` to `workdir/report` (or `out`); returns the HTML page's path."""
    workdir = Path(workdir)
    if not study_path(workdir).is_file():
        raise ConfigError(f"{workdir} is not a study work directory (no study.yaml); run `samscale sweep` first")
    study = load_study(study_path(workdir))
    frame = RunStore(store_path(workdir)).runs_frame(study.name)
    source, substitute = _provenance(frame)
    header = {
        "command": command,
        "study": study.name,
        "budget": study.budget or "(custom)",
        "data source": source,
        "generated": dt.datetime.now().isoformat(timespec="seconds"),
    }
    notes = list(study.notes)
    if substitute:
        header["substitution"] = f"this run used a stand-in for {substitute}; see the data source above"
    if study.description:
        notes.insert(0, study.description.strip())
    return write_report(
        Path(out) if out else report_dir(workdir),
        title=f"samscale — {study.name}",
        frame=frame,
        rule=study.selection,
        header=header,
        paper=paper_gains(study.paper) if study.paper else None,
        expected_seeds=study.expected_seeds(),
        notes=notes,
    )
