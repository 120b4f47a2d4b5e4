"""Where datasets live on disk: one resolution rule for every source.

`root`, when given, is the dataset's own directory. Otherwise each dataset gets `<data home>/<name>`, where the data
home is `$SAMSCALE_DATA`, else `$XDG_CACHE_HOME/samscale`, else `~/.cache/samscale`.
"""
from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """The directory under which every dataset gets its own folder."""
    explicit = os.environ.get("SAMSCALE_DATA")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "samscale"


def dataset_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding dataset `name`: `root` when given, else `data_home()/name`."""
    return Path(root).expanduser() if root is not None else data_home() / name
