"""Published digests and download mirrors of every fetched file, kept in `checksums.json` beside this module."""
from __future__ import annotations

import hashlib
import json
import os
from importlib.resources import files
from typing import Any

from samscale.data.errors import ChecksumMismatch

#: {resource: {"mirrors": [base URL, ...], "files": {file name: {algorithm: hex digest}}}}
RESOURCES: dict[str, dict[str, Any]] = json.loads(files("samscale.data").joinpath("checksums.json").read_text())

_CHUNK = 1 << 20


def expected_digest(resource: str, filename: str) -> tuple[str, str]:
    """The (algorithm, hex digest) published for `filename` of `resource`."""
    try:
        entry = RESOURCES[resource]["files"][filename]
    except KeyError:
        known = {name: sorted(spec["files"]) for name, spec in RESOURCES.items()}
        raise KeyError(f"no checksum recorded for {resource!r}/{filename!r}; recorded: {known}") from None
    ((algorithm, digest),) = entry.items()
    return algorithm, digest


def mirrors(resource: str) -> list[str]:
    """Base URLs (ending in '/') from which the files of `resource` can be downloaded, in order of preference."""
    return list(RESOURCES[resource]["mirrors"])


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike[str], algorithm: str, expected: str) -> None:
    """Raise ChecksumMismatch unless the file's digest equals `expected`."""
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise ChecksumMismatch(f"{path}: {algorithm} is {actual}, expected {expected}")
