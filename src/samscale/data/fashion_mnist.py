"""Fashion-MNIST: 60k train / 10k test 28x28 clothing images in 10 classes, pixels / 255, no augmentation.

Looked for, in order: IDX files in the dataset directory; the Debian package dataset-fashion-mnist
(`/usr/share/datasets/fashion-mnist`, gzipped IDX files; Debian re-compresses them, so their md5 differs from the
published one and is not checked: local IDX files are validated by their headers instead); a download of the
published IDX files (md5-checked) when `download=True`.
"""
from __future__ import annotations

import os
from pathlib import Path

from samscale.data.dataset import SourceDataset
from samscale.data.download import fetch
from samscale.data.grayscale import grayscale_source
from samscale.data.idx import IDX_FILES, ImageArrays, read_idx_dataset
from samscale.data.locate import Candidate, first_available, skipped
from samscale.data.paths import dataset_dir

#: Where the Debian package dataset-fashion-mnist installs the IDX files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def _download(directory: Path) -> ImageArrays:
    for stem in IDX_FILES.values():
        fetch("fashion-mnist", f"{stem}.gz", directory)
    return read_idx_dataset(directory)


def load_fashion_mnist_arrays(
    root: str | os.PathLike[str] | None = None, download: bool = False
) -> tuple[ImageArrays, str]:
    """(arrays, provenance) from the first place Fashion-MNIST is found; DatasetUnavailable lists every place tried."""
    directory = dataset_dir("fashion-mnist", root)
    debian = DEBIAN_DIR
    candidates = [
        Candidate(f"IDX files in {directory}", lambda: read_idx_dataset(directory)),
        Candidate(f"IDX files in {debian} (Debian package dataset-fashion-mnist)", lambda: read_idx_dataset(debian)),
        Candidate(f"download of the IDX files into {directory} (md5-checked)",
                  (lambda: _download(directory)) if download else skipped("not attempted (download=False)")),
    ]
    files = ", ".join(f"{stem}.gz" for stem in IDX_FILES.values())
    fixes = [
        "apt-get install dataset-fashion-mnist  (Debian/Ubuntu; works offline once installed)",
        f"put {files} (gzipped or not) in {directory}  (or pass root=DIR, or set $SAMSCALE_DATA)",
        "pass download=True",
    ]
    return first_available("fashion-mnist", candidates, fixes)


def build_fashion_mnist(*, root: str | None, download: bool, augment: bool) -> SourceDataset:
    """Fashion-MNIST as float32 (N, 1, 28, 28) in [0, 1]; `augment` has no effect."""
    arrays, where = load_fashion_mnist_arrays(root, download)
    return grayscale_source(arrays, where)
