"""CIFAR-10: 50k train / 10k test 32x32 RGB images, per-channel normalization, pad-crop-flip training augmentation.

Reads the official python pickle batches (`cifar-10-batches-py/data_batch_1..5`, `test_batch`; keys b"data"
uint8 N x 3072 in CHW order and b"labels") from the dataset directory, or from the directory itself. With
`download=True` the official tar.gz is fetched (md5-checked) and extracted there.
"""
from __future__ import annotations

import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from samscale.data.augment import PadCropFlip
from samscale.data.dataset import SourceDataset
from samscale.data.download import fetch
from samscale.data.errors import UnreadableFile
from samscale.data.idx import ImageArrays
from samscale.data.locate import Candidate, first_available, skipped
from samscale.data.paths import dataset_dir
from samscale.data.safe_pickle import load_array_pickle
from samscale.data.split import Split
from samscale.fileio import write_with

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
BATCHES_DIR = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch as images (N, 3, 32, 32) uint8 and labels (N,) int64.

    The batch must have the official plain structure: a dict of bytes (or str) keys holding a uint8 array
    `data` (N, 3072), a list of N int `labels` in 0..9, and otherwise only bytes, strings, ints and
    lists of them. Anything else, damaged or crafted, raises `UnreadableFile` naming the file and the problem.
    """
    try:
        with open(path, "rb") as handle:
            batch = load_array_pickle(handle, encoding="bytes")
    except pickle.UnpicklingError as err:
        raise UnreadableFile(f"{path}: not a CIFAR-10 batch: {err}") from None
    problem = _batch_problem(batch)
    if problem:
        raise UnreadableFile(f"{path}: not a CIFAR-10 batch: {problem}")
    data, labels = _entry(batch, "data"), _entry(batch, "labels")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _entry(batch: dict, key: str):
    return batch[key.encode()] if key.encode() in batch else batch[key]


def _plain(value, depth: int = 0) -> bool:
    """Bytes, text, ints, uint8 arrays, or lists of them (the values of an official batch)."""
    if isinstance(value, (bytes, str)) or (isinstance(value, int) and not isinstance(value, bool)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype == np.uint8
    return isinstance(value, list) and depth < 1 and all(_plain(item, depth + 1) for item in value)


def _batch_problem(batch) -> str | None:
    """What keeps `batch` from being an official CIFAR-10 batch, or None."""
    if not isinstance(batch, dict):
        return f"expected a dict, got a {type(batch).__name__}"
    if bad := [key for key in batch if not isinstance(key, (bytes, str))]:
        return f"keys must be bytes or text, got {bad[:3]!r}"
    if bad := sorted(repr(key) for key, value in batch.items() if not _plain(value)):
        return f"entries {', '.join(bad[:3])} hold values other than bytes, text, ints, uint8 arrays and lists"
    missing = [key for key in ("data", "labels") if key.encode() not in batch and key not in batch]
    if missing:
        return f"missing entries {missing}"
    data, labels = _entry(batch, "data"), _entry(batch, "labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shape = data.shape if isinstance(data, np.ndarray) else type(data).__name__
        return f"expected data as a uint8 array (N, 3072), got {shape}"
    if not isinstance(labels, list) or not all(isinstance(label, int) for label in labels):
        return "expected labels as a list of ints"
    if len(labels) != len(data) or any(not 0 <= label < 10 for label in labels):
        return f"expected {len(data)} labels in 0..9, got {len(labels)} ranging {min(labels, default=None)}.." \
               f"{max(labels, default=None)}"
    return None


def find_batches_dir(directory: str | os.PathLike[str]) -> Path:
    """The folder holding the batches: `directory/cifar-10-batches-py` or `directory` itself."""
    directory = Path(directory)
    for candidate in (directory / BATCHES_DIR, directory):
        if all((candidate / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH)):
            return candidate
    raise FileNotFoundError(f"missing {BATCHES_DIR}/{{data_batch_1..5, test_batch}}")


def read_cifar10(directory: str | os.PathLike[str]) -> ImageArrays:
    """Official train (the five data batches, in order) and test arrays from a folder of pickle batches."""
    folder = find_batches_dir(directory)
    train = [read_cifar_batch(folder / name) for name in TRAIN_BATCHES]
    test_images, test_labels = read_cifar_batch(folder / TEST_BATCH)
    return ImageArrays(
        np.concatenate([images for images, _ in train]),
        np.concatenate([labels for _, labels in train]),
        test_images,
        test_labels,
    )


def normalize(images: np.ndarray, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (N, C, H, W) images as float32 (pixels / 255 - mean) / std, per channel."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


def _download(directory: Path) -> ImageArrays:
    archive = fetch("cifar10", ARCHIVE, directory)
    with tarfile.open(archive, "r:gz") as tar:
        _extract_within(tar, directory)
    return read_cifar10(directory)


def _extract_within(tar: tarfile.TarFile, directory: Path) -> None:
    """Extract the batch files (regular files named `cifar-10-batches-py/NAME` for the six batches) atomically;
    any other member is skipped, so nothing can land outside `directory` or replace a file by a link."""
    wanted = {f"{BATCHES_DIR}/{name}" for name in (*TRAIN_BATCHES, TEST_BATCH)}
    found = set()
    for member in tar.getmembers():
        if member.name in wanted and member.isfile():
            source = tar.extractfile(member)
            write_with(directory / member.name, lambda out: shutil.copyfileobj(source, out))
            found.add(member.name)
    if missing := sorted(wanted - found):
        raise UnreadableFile(f"{tar.name} lacks the regular files {missing}")


def build_cifar10(*, root: str | None, download: bool, augment: bool) -> SourceDataset:
    """CIFAR-10 normalized with the paper's mean/std; training augmentation pad 4 (raw zeros), crop 32, flip."""
    directory = dataset_dir("cifar10", root)
    candidates = [
        Candidate(f"pickle batches in {directory}", lambda: read_cifar10(directory)),
        Candidate(f"download of {ARCHIVE} into {directory} (md5-checked)",
                  (lambda: _download(directory)) if download else skipped("not attempted (download=False)")),
    ]
    fixes = [
        f"extract {ARCHIVE} (https://www.cs.toronto.edu/~kriz/cifar.html) into {directory}  "
        "(or pass root=DIR, or set $SAMSCALE_DATA)",
        "pass download=True",
        "use the documented CPU stand-in: load_dataset('cifar10-standin')",
    ]
    arrays, where = first_available("cifar10", candidates, fixes)
    mean, std = torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD)
    return SourceDataset(
        train=Split(normalize(arrays.train_images, mean, std), torch.from_numpy(arrays.train_labels)),
        test=Split(normalize(arrays.test_images, mean, std), torch.from_numpy(arrays.test_labels)),
        task="classification",
        num_classes=10,
        output_dim=10,
        input_shape=(3, 32, 32),
        source=where,
        train_augment=PadCropFlip(pad=4, fill=-mean / std) if augment else None,
    )
