"""The layout of a work directory, in one place: where the store, checkpoints, study file and reports live.

    WORKDIR/
      samscale.db               the run store (SQLite)
      study.yaml                the study a sweep ran (so its report can be rebuilt any time)
      checkpoints/RUN_ID.pt     each run's last checkpoint (weights only once the run is finished, unless kept)
      checkpoints/RUN_ID.replay/  a DQN run's replay buffer in appended chunks (removed with its optimizer state)
      report/                   the study's report (replaced atomically when rebuilt)
      analysis/RUN_ID/          `samscale analyze` output for one run
"""
from __future__ import annotations

from pathlib import Path

STORE_FILE = "samscale.db"
STUDY_FILE = "study.yaml"


def store_path(workdir: str | Path) -> Path:
    """The run store of a work directory."""
    return Path(workdir) / STORE_FILE


def study_path(workdir: str | Path) -> Path:
    """The study YAML a sweep saves beside its store."""
    return Path(workdir) / STUDY_FILE


def checkpoint_path(workdir: str | Path, run_id: str) -> Path:
    """Where a run's last checkpoint lives."""
    return Path(workdir) / "checkpoints" / f"{run_id}.pt"


def replay_path(workdir: str | Path, run_id: str) -> Path:
    """The folder of a DQN run's replay-buffer chunks, beside its checkpoint."""
    return Path(workdir) / "checkpoints" / f"{run_id}.replay"


def report_dir(workdir: str | Path) -> Path:
    """The folder of a study's report."""
    return Path(workdir) / "report"


def analysis_dir(workdir: str | Path, run_id: str) -> Path:
    """The folder of one run's curvature analysis."""
    return Path(workdir) / "analysis" / run_id
