"""Fetch a published file from its mirrors into a directory, verifying its digest before it becomes visible."""
from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from samscale.data.checksums import expected_digest, file_digest, mirrors
from samscale.data.errors import DownloadFailed
from samscale.process import owner_tag

TIMEOUT_S = 60.0


def fetch(resource: str, filename: str, directory: str | os.PathLike[str]) -> Path:
    """Download `filename` of `resource` into `directory` (trying each mirror) and return its verified path.

    An existing file with the right digest is reused (one with a wrong digest is replaced). Downloads are written
    under a temporary name and renamed only once their digest matches, so an interrupted or corrupt download never
    looks like a valid copy. The temporary name carries this process's `owner_tag`, so that a sweep can remove the
    partial download of a process that was killed.
    """
    algorithm, digest = expected_digest(resource, filename)
    directory = Path(directory)
    target = directory / filename
    if target.is_file() and file_digest(target, algorithm) == digest:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    failures = []
    for base in mirrors(resource):
        url = base + filename
        handle, temporary = tempfile.mkstemp(prefix=f".{filename}.{owner_tag()}.", dir=directory)
        os.close(handle)
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(temporary, "wb") as out:
                shutil.copyfileobj(response, out)
            actual = file_digest(temporary, algorithm)
        except OSError as error:
            failures.append(f"{url}: {error}")
            Path(temporary).unlink(missing_ok=True)
            continue
        if actual != digest:
            failures.append(f"{url}: {algorithm} is {actual}, expected {digest}")
            Path(temporary).unlink()
            continue
        os.replace(temporary, target)
        return target
    tried = "\n  ".join(failures) or "no mirrors recorded"
    raise DownloadFailed(f"could not download {filename} for {resource}:\n  {tried}")
