"""Try the places a dataset may be found, in order, and explain every failure if none works."""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from samscale.data.errors import DatasetUnavailable

T = TypeVar("T")

#: Failures that mean "not usable here, try the next place" (missing, unreadable, corrupt, download failed).
_RECOVERABLE = (OSError, ValueError, EOFError, pickle.UnpicklingError)


@dataclass(frozen=True)
class Candidate(Generic[T]):
    """One place to look: a human-readable description and a loader that raises if the data is not usable there."""

    where: str
    load: Callable[[], T]


def first_available(dataset: str, candidates: Sequence[Candidate[T]], fixes: Sequence[str]) -> tuple[T, str]:
    """(data, where) from the first candidate that loads; otherwise DatasetUnavailable listing each try and `fixes`.

    A candidate that was present but unusable (corrupt, wrong checksum) before the one that loaded is named in
    `where`, so falling back never goes unnoticed.
    """
    failures, unusable = [], []
    for number, candidate in enumerate(candidates, start=1):
        try:
            data = candidate.load()
        except _RECOVERABLE as error:
            failures.append(f"  {number}. {candidate.where}: {_reason(error)}")
            if not isinstance(error, FileNotFoundError):
                unusable.append(f"{candidate.where}: {_reason(error)}")
            continue
        note = f" (skipped unusable: {'; '.join(unusable)})" if unusable else ""
        return data, candidate.where + note
    remedies = "\n".join(f"  - {fix}" for fix in fixes)
    raise DatasetUnavailable(f"dataset {dataset!r} is not available; tried:\n" + "\n".join(failures)
                             + f"\nto fix, do one of:\n{remedies}")


def skipped(reason: str) -> Callable[[], T]:
    """A loader for a candidate that is deliberately not tried (e.g. download=False); it fails with `reason`."""

    def load() -> T:
        raise FileNotFoundError(reason)

    return load


def _reason(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError) and error.filename is not None:
        return f"not found ({error.filename})"
    return str(error) or type(error).__name__
