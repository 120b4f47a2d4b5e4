"""Fetch a published file from its mirrors into a directory, verifying its digest before it becomes visible."""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from samscale.data.checksums import expected_digest, file_digest, mirrors
from samscale.data.errors import DownloadFailed
from samscale.fileio import atomic_write

TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class _WrongDigest(Exception):
    """A download whose digest differs from the published one (it is discarded, the next mirror tried)."""


def fetch(resource: str, filename: str, directory: str | os.PathLike[str]) -> Path:
    """Download `filename` of `resource` into `directory` (trying each mirror) and return its verified path.

    An existing file with the right digest is reused (one with a wrong digest is replaced). Downloads are written
    under a temporary name and renamed only once their digest matches, so an interrupted or corrupt download never
    looks like a valid copy.
    """
    algorithm, digest = expected_digest(resource, filename)
    directory = Path(directory)
    target = directory / filename
    if target.is_file() and file_digest(target, algorithm) == digest:
        return target
    failures = []
    for base in mirrors(resource):
        url = base + filename
        try:
            with atomic_write(target, "wb") as out:
                hasher = hashlib.new(algorithm)
                with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        hasher.update(chunk)
                        out.write(chunk)
                if hasher.hexdigest() != digest:  # leaving the block by raising discards the download
                    raise _WrongDigest(f"{algorithm} is {hasher.hexdigest()}, expected {digest}")
        except (OSError, _WrongDigest) as error:
            failures.append(f"{url}: {error}")
            continue
        return target
    tried = "\n  ".join(failures) or "no mirrors recorded"
    raise DownloadFailed(f"could not download {filename} for {resource}:\n  {tried}")
