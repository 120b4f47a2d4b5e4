"""Errors raised while locating, verifying and preparing datasets."""
from __future__ import annotations

import contextlib
import csv
import gzip
import struct
import zipfile
import zlib
from typing import Iterator

from samscale.errors import ConfigError


class DatasetUnavailable(FileNotFoundError):
    """No usable copy of a dataset was found; the message lists every place tried and how to provide one."""


class ChecksumMismatch(ValueError):
    """A file's digest differs from the published one (corrupt, truncated or a different version)."""


class UnreadableFile(ConfigError):
    """A dataset file that is damaged or crafted (not the format it should be); it is refused with what was wrong."""


#: What the standard parsers raise on damaged input, besides the ValueErrors that already say what was wrong.
_PARSE_ERRORS = (gzip.BadGzipFile, zlib.error, csv.Error, struct.error, zipfile.BadZipFile, EOFError, UnicodeError,
                 OverflowError, MemoryError)


@contextlib.contextmanager
def reading(path: object, expected: str) -> Iterator[None]:
    """Turn a parser's low-level error on a damaged file (a corrupt gzip stream, a torn CSV, a short header) into
    `UnreadableFile` naming the file and what it should have been."""
    try:
        yield
    except _PARSE_ERRORS as err:
        detail = f": {str(err).splitlines()[0]}" if str(err).strip() else ""
        raise UnreadableFile(f"{path}: not {expected} ({type(err).__name__}{detail})") from None


class DownloadFailed(OSError):
    """Every mirror of a file failed (network error or checksum mismatch); the message lists each attempt."""


class UnknownDataset(KeyError):
    """A dataset name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


__all__ = ["ChecksumMismatch", "ConfigError", "DatasetUnavailable", "DownloadFailed", "UnknownDataset",
           "UnreadableFile"]
