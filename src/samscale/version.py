"""The code version that produces a run's numbers: the package version, plus the git commit when run from a checkout.

A run's identity is its spec *and* the code that trained it. Every run records `code_version()`; a sweep refuses to
mix finished runs of another code version into a study unless told what to do with them. A checkout with
uncommitted changes to tracked files is marked `.dirty`: two dirty checkouts of one commit cannot be told apart, so
commit before a study whose numbers matter.
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from samscale import __version__


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """`0.1.0` for an installed package; `0.1.0+g<12-hex commit>` from a clean checkout, `…+g<commit>.dirty` else."""
    package_dir = Path(__file__).resolve().parent
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    if top is None or not (Path(top) / "pyproject.toml").is_file() or package_dir != Path(top) / "src" / "samscale":
        return __version__
    commit = _git(Path(top), "rev-parse", "--short=12", "HEAD")
    if commit is None:
        return __version__
    changes = _git(Path(top), "status", "--porcelain", "--untracked-files=no")
    return f"{__version__}+g{commit}" + (".dirty" if changes else "")
