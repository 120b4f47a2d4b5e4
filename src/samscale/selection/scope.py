"""Which runs belong to a study: exactly the runs its current definition expands to, never others of the store.

A work directory's store keeps every run ever swept there, also those of an earlier grid (a ρ value since dropped,
a size no longer studied). The store links them all to the study's name, so reading "the study's runs" by name
would mix grids. Reports, `samscale runs` on a study folder and selection read the runs the study expands to now,
and say how many others the store holds.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from samscale.spec.study import Study


@dataclass(frozen=True)
class StudyRuns:
    """The runs frame of a study's current expansion, and what was left aside.

    `frame` holds only runs whose id is in the expansion; `left_out` counts the other runs of the frame it was cut
    from (runs of earlier grids, of other studies); `not_registered` counts runs of the expansion the store does not
    have yet (a grid grown since the last sweep).
    """

    frame: pd.DataFrame
    left_out: int
    not_registered: int

    def header(self) -> str:
        """One header line: how many runs of the store the report leaves out, and why."""
        parts = [f"{self.left_out} other run{'s' * (self.left_out != 1)} in the store (not in the study's current "
                 f"grid) left out"]
        if self.not_registered:
            parts.append(f"{self.not_registered} run{'s' * (self.not_registered != 1)} of the study not in the "
                         "store yet (sweep again)")
        return "; ".join(parts)


def study_run_ids(study: Study) -> list[str]:
    """The run ids the study expands to, in expansion order."""
    return [spec.run_id for spec in study.expand()]


def study_runs(frame: pd.DataFrame, study: Study, store_total: int | None = None) -> StudyRuns:
    """`frame` (a runs frame, e.g. every run the store links to the study) cut to the study's current expansion.

    `store_total`, when given, is the number of runs in the whole store, so that `left_out` counts every run the
    result does not hold (else only those of `frame`)."""
    wanted = study_run_ids(study)
    if frame.empty or "run_id" not in frame:
        kept = frame
    else:
        kept = frame[frame["run_id"].isin(set(wanted))].reset_index(drop=True)
    total = len(frame) if store_total is None else store_total
    return StudyRuns(kept, total - len(kept), len(set(wanted)) - len(kept))
