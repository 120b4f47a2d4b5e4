"""The IDX file format of MNIST and Fashion-MNIST: a big-endian header (magic, dims) followed by raw values.

Magic number = 0x0000 | type code | number of dims (images 0x00000803 = 2051, labels 0x00000801 = 2049).
Files may be gzip-compressed; compression is detected from the content, not the name.
"""
from __future__ import annotations

import gzip
import io
import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from samscale.data.errors import UnreadableFile, reading

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
MAX_BYTES = 1 << 30
"""The most a gzip-compressed IDX file may decompress to (MNIST-style datasets hold under 100 MB), against bombs."""

#: The four files of an MNIST-style dataset, by role, as published (gzip) names without the '.gz'.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (plain or gzip) into an array with the file's shape and dtype (native byte order)."""
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == _GZIP_MAGIC:
        with reading(path, "a gzip-compressed IDX file"), gzip.GzipFile(fileobj=io.BytesIO(raw)) as packed:
            raw = packed.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise UnreadableFile(f"{path}: decompresses to more than {MAX_BYTES} bytes; not an IDX file of a dataset")
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ValueError(f"{path}: not an IDX file (header {raw[:4].hex()!r}; expected 0000 <type> <ndim>)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _TYPES:
        raise ValueError(f"{path}: unknown IDX type code {type_code:#04x}; valid: {sorted(hex(c) for c in _TYPES)}")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise UnreadableFile(f"{path}: the IDX header promises {ndim} dimensions but the file ends after {len(raw)} "
                             "bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header_end])
    dtype = np.dtype(_TYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    held = len(raw) - header_end
    if held != expected:
        raise ValueError(f"{path}: header promises shape {shape} ({expected} bytes), file holds {held}")
    return np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_files(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """The four IDX files in `directory`, each plain or '.gz'; FileNotFoundError names any that are missing."""
    directory = Path(directory)
    found, missing = {}, []
    for role, stem in IDX_FILES.items():
        existing = next((p for p in (directory / stem, directory / f"{stem}.gz") if p.is_file()), None)
        if existing is None:
            missing.append(f"{stem}[.gz]")
        else:
            found[role] = existing
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}")
    return found


def read_idx_image_pair(images_path: Path, labels_path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 and labels (N,) int64 from two IDX files, checked for agreeing counts and label range."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_path}: expected {len(images)} labels, got shape {labels.shape}")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{labels_path}: labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return images, labels


class ImageArrays(NamedTuple):
    """Official train and test images (N, H, W) uint8 with int64 labels, as read from disk."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def read_idx_dataset(directory: str | os.PathLike[str]) -> ImageArrays:
    """The four IDX files of an MNIST-style dataset in `directory`, read and cross-checked."""
    paths = find_idx_files(directory)
    train = read_idx_image_pair(paths["train_images"], paths["train_labels"])
    test = read_idx_image_pair(paths["test_images"], paths["test_labels"])
    if train[0].shape[1:] != test[0].shape[1:]:
        raise ValueError(f"{directory}: train images are {train[0].shape[1:]} but test images {test[0].shape[1:]}")
    return ImageArrays(*train, *test)
