"""Unpickling restricted to plain containers and numpy arrays, for the pickle-based dataset formats.

CIFAR-10 batches and Nielsen's MNIST pickle are Python pickles; refusing every other global keeps a stray or
tampered file from running code when it is loaded.
"""
from __future__ import annotations

import importlib
import pickle
from typing import IO, Any

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        canonical = module.replace("numpy._core", "numpy.core", 1)
        if (canonical, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays and builtins allowed")
        if canonical.startswith("numpy.core"):  # numpy >= 2 moved numpy.core to numpy._core
            try:
                return getattr(importlib.import_module(canonical.replace("numpy.core", "numpy._core", 1)), name)
            except ModuleNotFoundError:
                pass
        return getattr(importlib.import_module(canonical), name)


def load_array_pickle(handle: IO[bytes], encoding: str = "ASCII") -> Any:
    """Unpickle from `handle`, allowing only builtin containers, numpy arrays and dtypes."""
    return _ArrayUnpickler(handle, encoding=encoding).load()
