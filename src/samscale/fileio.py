"""Every file samscale writes goes through `atomic_write`: a temporary file in the same folder, flushed and fsynced,
then renamed over the target (and the folder fsynced), so a reader or a crash sees the old file or the new one,
never a torn or empty one.

Temporary files are named `.NAME.owner-PID-KEY.XXXXXXXX.tmp` beside their target (`is_temp_name` recognizes them),
and are removed when writing fails; only a kill between creating and renaming one can leave it behind. The
`samscale.process.owner_tag` in the name says which process wrote it, so a clean-up can prove its writer dead before
removing it (`samscale.sweep.debris`).

A writer whose right to the target can be lost (a run's checkpoint, fenced by its claim) passes `commit`: a context
manager held around the rename, which raises instead of entering when the writer lost that right; then the temporary
file is removed and the target is left as it was.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, ContextManager, Iterator

from samscale.process import owner_tag

TEMP_SUFFIX = ".tmp"


def temp_prefix(path: str | os.PathLike[str]) -> str:
    """The name prefix of the temporary files written on the way to `path`."""
    return f".{Path(path).name}."


def _mkstemp(path: Path) -> tuple[int, str]:
    return tempfile.mkstemp(dir=path.parent, prefix=f"{temp_prefix(path)}{owner_tag()}.", suffix=TEMP_SUFFIX)


def is_temp_name(name: str, target: str | None = None) -> bool:
    """Whether a file name is one of `atomic_write`'s temporaries (of `target`'s name when given)."""
    prefix = temp_prefix(target) if target is not None else "."
    return name.startswith(prefix) and name.endswith(TEMP_SUFFIX) and len(name) > len(prefix) + len(TEMP_SUFFIX)


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", *, encoding: str | None = None,
                 newline: str | None = None, commit: ContextManager[Any] | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing (`mode` "w" or "wb"); on a clean exit it replaces `path`
    (inside `commit`, when given).

    An exception inside the block, or from entering `commit`, removes the temporary file and leaves `path` as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files; mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with commit if commit is not None else contextlib.nullcontext():
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_write(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_with(path: str | os.PathLike[str], writer: Callable[[IO[Any]], Any], mode: str = "wb", **kwargs: Any) -> Path:
    """Atomically write `path` with `writer(handle)` (e.g. a figure's savefig, a frame's to_csv); returns the path.
    Keyword arguments go to `atomic_write` (`commit` among them)."""
    with atomic_write(path, mode, **kwargs) as handle:
        writer(handle)
    return Path(path)


def write_csv(path: str | os.PathLike[str], frame: Any) -> Path:
    """Write a pandas frame as CSV without its index, atomically; returns the path."""
    return write_with(path, lambda handle: frame.to_csv(handle, index=False), "w", newline="")


def create_new(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> bool:
    """Write `text` to `path` only if no file is there yet, atomically and race-free; returns whether it did.

    The text is written to a temporary file and hard-linked to `path`, which fails if `path` exists (so of two
    writers at once exactly one succeeds, and `path` is never seen half written).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp(path)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_folder(path.parent)
    return True
