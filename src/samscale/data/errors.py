"""Errors raised while locating, verifying and preparing datasets."""
from __future__ import annotations

from samscale.errors import ConfigError


class DatasetUnavailable(FileNotFoundError):
    """No usable copy of a dataset was found; the message lists every place tried and how to provide one."""


class ChecksumMismatch(ValueError):
    """A file's digest differs from the published one (corrupt, truncated or a different version)."""


class UnreadableFile(ConfigError):
    """A dataset file that is damaged or crafted (not the format it should be); it is refused with what was wrong."""


class DownloadFailed(OSError):
    """Every mirror of a file failed (network error or checksum mismatch); the message lists each attempt."""


class UnknownDataset(KeyError):
    """A dataset name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


__all__ = ["ChecksumMismatch", "ConfigError", "DatasetUnavailable", "DownloadFailed", "UnknownDataset",
           "UnreadableFile"]
