"""Clearing what killed processes left behind, and only what provably belongs to a dead process.

A process killed at the wrong moment leaves temporary files and folders: `samscale.fileio`'s temporary file beside
a checkpoint, the study file or a download in the data cache (`fileio.is_temp_name`), a report's half-swapped
`.report.new-*` / `.report.old-*` folder, a multi-process run's rendezvous folder in the system's temporary
directory. Their names carry the writer's `samscale.process.owner_tag` (pid and machine key), so a sweep removes one
only when its writer is provably dead (same host, boot and PID namespace, pid gone). Names without a tag (left by
older versions) are removed only from the work directory, only when older than the store's stale limit, and (for
checkpoints) only when no live process holds their run.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from samscale.data.paths import data_home
from samscale.fileio import is_temp_name
from samscale.process import tag_is_dead
from samscale.store import RunStore
from samscale.workdir import checkpoint_path, report_dir

RENDEZVOUS_PREFIX = "samscale-rendezvous-"


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    return True


def _old(path: Path, seconds: float) -> bool:
    try:
        return path.lstat().st_mtime < time.time() - seconds
    except FileNotFoundError:
        return False


def debris(workdir: str | Path, store: RunStore) -> list[Path]:
    """The leftovers of dead processes that `clear_debris` would remove now."""
    found: list[Path] = []
    stale = store.stale_after_s
    folder = checkpoint_path(workdir, "x").parent
    if folder.is_dir():
        held = store.held_runs()
        for path in folder.glob("*.tmp"):  # fileio's `.RUN.pt.owner-….tmp`, and older versions' untagged names
            run_id = path.name.removeprefix(".").split(".pt", 1)[0]
            if tag_is_dead(path.name) or ("owner-" not in path.name and run_id not in held and _old(path, stale)):
                found.append(path)
    if Path(workdir).is_dir():  # the study file's
        found += [path for path in Path(workdir).glob(".*") if is_temp_name(path.name) and tag_is_dead(path.name)]
    report = report_dir(workdir)
    for pattern in (f".{report.name}.new-*", f".{report.name}.old-*"):
        for path in report.parent.glob(pattern):
            if tag_is_dead(path.name) or ("owner-" not in path.name and _old(path, stale)):
                found.append(path)
    rendezvous = Path(tempfile.gettempdir()).glob(f"{RENDEZVOUS_PREFIX}owner-*")
    found += [path for path in rendezvous if tag_is_dead(path.name)]
    home = data_home()
    if home.is_dir():
        found += [path for path in home.glob("*/.*") if is_temp_name(path.name) and tag_is_dead(path.name)]
    return found


def clear_debris(workdir: str | Path, store: RunStore) -> list[Path]:
    """Remove the leftovers of dead processes (see the module docstring); returns what was removed."""
    return [path for path in debris(workdir, store) if _remove(path)]
