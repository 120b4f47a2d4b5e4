"""Reading the .npz caches of decoded or generated datasets without trusting them: a cache that is damaged, holds
other arrays or non-numeric ones, or fails the caller's check is ignored (and then rebuilt), never an error."""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


def read_npz_cache(path: Path, fields: Sequence[str], valid: Callable[[dict[str, np.ndarray]], bool] = lambda _: True
                   ) -> dict[str, np.ndarray] | None:
    """The arrays `fields` of the cache at `path` (numeric dtypes only, no pickled objects), or None when it is
    absent or unusable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if sorted(stored.files) != sorted(fields):
                return None
            arrays = {name: stored[name] for name in fields}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
        return None
    if any(array.dtype.kind not in "biuf" for array in arrays.values()) or not valid(arrays):
        return None
    return arrays
