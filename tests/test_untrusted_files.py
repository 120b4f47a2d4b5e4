"""No dataset file is trusted: crafted and damaged CIFAR-10 batch files (a dtype restated by BUILD to hold objects,
object arrays, reduce gadgets, truncated streams, random byte flips of a valid file) each get a clear error naming
the file, read in a subprocess that must exit normally (a crafted dtype used to segfault numpy)."""
from __future__ import annotations

import builtins
import json
import os
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from samscale.data import DatasetUnavailable, load_dataset
from samscale.data.cifar10 import read_cifar_batch

READER = textwrap.dedent("""
    import json, sys, warnings
    from pathlib import Path
    warnings.simplefilter("ignore")
    from samscale.data.cifar10 import read_cifar_batch
    from samscale.data.errors import UnreadableFile

    results = {}
    for path in sorted(Path(sys.argv[1]).iterdir()):
        try:
            images, labels = read_cifar_batch(path)
            ok = images.dtype.name == "uint8" and images.shape[1:] == (3, 32, 32) and len(labels) == len(images)
            results[path.name] = "loaded" if ok else f"unexpected: loaded {images.dtype} {images.shape}"
        except UnreadableFile as err:
            message = str(err)
            results[path.name] = ("refused: " + message.split(": not a CIFAR-10 batch: ", 1)[1]
                                  if message.startswith(f"{path}: not a CIFAR-10 batch: ") else "unclear: " + message)
        except BaseException as err:
            results[path.name] = f"unexpected: {type(err).__name__}: {err}"
    print(json.dumps(results))
""")


class _Reduce:
    """Pickles as `function(*args)`, optionally followed by BUILD with `state`: any gadget a file could hold."""

    def __init__(self, function, args, state=None):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        return (self.function, self.args) if self.state is None else (self.function, self.args, self.state)


def _dtype(spec: str, state: tuple) -> _Reduce:
    return _Reduce(np.dtype, (spec, False, True), state)


def _array(dtype, raw: bytes, shape=(1, 3072)) -> _Reduce:
    return _Reduce(np.core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, raw))


def _batch(data, labels=None) -> dict:
    return {b"batch_label": b"testing batch 1 of 1", b"labels": [3] if labels is None else labels, b"data": data,
            b"filenames": [b"x.png"]}


def crafted_batches() -> dict[str, tuple[object, str]]:
    """name → (object to pickle, fragment of the expected refusal)."""
    pixels = bytes(range(256)) * 12
    object_flags = (3, "|", None, None, None, -1, -1, 61)  # what BUILD can claim: 'holds objects', not list-pickled
    return {
        "dtype-build-object-flags": (_batch(_array(_dtype("O", object_flags), b"\x41" * 8 * 3072)), "dtype"),
        "dtype-build-flags-on-u1": (_batch(_array(_dtype("u1", (3, "|", None, None, None, -1, -1, 63)), pixels)),
                                    "restated"),
        "dtype-build-fields": (_batch(_array(_dtype("u1", (3, "|", None, ("a",), {"a": (np.dtype("u1"), 0)}, 1, 1,
                                                           16)), pixels)), "restated"),
        "dtype-build-elsize": (_batch(_array(_dtype("u1", (3, "|", None, None, None, 8, 1, 0)), pixels)), "restated"),
        "dtype-object": (_batch(np.array([1, None], dtype=object)), "object dtype"),
        "dtype-object-labels": (_batch(np.zeros((1, 3072), np.uint8), labels=np.array([3], dtype=object)),
                                "object dtype"),
        "dtype-structured": (_batch(np.zeros(2, dtype=[("a", "u1"), ("b", "<u8")])), "dtype"),
        "dtype-void": (_batch(np.zeros(2, dtype="V8")), "dtype"),
        "array-size-mismatch": (_batch(_array(_dtype("u1", (3, "|", None, None, None, -1, -1, 0)), b"\x00" * 10,
                                              shape=(1 << 40, 3072))), "from 10 bytes"),
        "reduce-os-system": (_batch(_Reduce(os.system, ("true",))), "system"),
        "reduce-eval": (_batch(_Reduce(builtins.eval, ("1 + 1",))), ".eval:"),
        "reduce-getattr": (_batch(_Reduce(builtins.getattr, ("text", "upper"))), ".getattr:"),
        "reduce-subprocess": (_batch(_Reduce(subprocess.Popen, (["true"],))), ".Popen:"),
        "reduce-numpy-frombuffer": (_batch(_Reduce(np.frombuffer, (pixels, "u1"))), "frombuffer"),
        "reduce-dtype-list": (_batch(_Reduce(np.dtype, ([("a", "O")], False, True))), "dtype"),
        "reduce-codecs-other": (_batch(_Reduce(__import__("_codecs").encode, ("x", "rot13"))), "rot13"),
        "reduce-reconstruct-other-class": (_batch(_Reduce(np.core.multiarray._reconstruct,
                                                          (np.ma.MaskedArray, (0,), b"b"))), "refusing"),
        "reduce-scalar-object": (_batch(_Reduce(np.core.multiarray.scalar, (np.dtype("O"), 7))), "object dtype"),
        "not-a-dict": ([1, 2, 3], "expected a dict"),
        "set-value": ({b"data": {1, 2}, b"labels": [1]}, "set"),
        "labels-out-of-range": (_batch(np.zeros((1, 3072), np.uint8), labels=[10]), "labels in 0..9"),
        "labels-bytes": (_batch(np.zeros((1, 3072), np.uint8), labels=b"\x03"), "labels as a list"),
        "data-float": (_batch(np.zeros((1, 3072), np.float32)), "values other than"),
        "data-wrong-shape": (_batch(np.zeros((1, 3071), np.uint8)), "(N, 3072)"),
        "nested-deeply": ({b"data": [[[[[[1]]]]]], b"labels": [1]}, "values other than"),
        "nested-too-deeply": ({b"data": _nested(40), b"labels": [1]}, "nested deeper than"),
        "shared-references": ({b"data": _doubling(30), b"labels": [1]}, "values other than"),  # 2**30 leaves
        "holds-itself": ({b"data": _holding_itself(), b"labels": [1]}, "holds itself"),
    }


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _doubling(levels: int) -> list:
    """A list whose expansion has 2**levels leaves, stored in a few hundred bytes by shared references."""
    value: list = [1]
    for _ in range(levels):
        value = [value, value]
    return value


def _holding_itself() -> list:
    value: list = []
    value.append(value)
    return value


def _valid_batch() -> bytes:
    rng = np.random.default_rng(0)
    return pickle.dumps(_batch(rng.integers(0, 256, (1, 3072), dtype=np.uint8)), protocol=2)


def test_crafted_and_damaged_batches_get_clear_errors_and_never_crash_the_reader(tmp_path):
    folder = tmp_path / "batches"
    folder.mkdir()
    expected = {}
    for name, (obj, fragment) in crafted_batches().items():
        for protocol in (2, 5):
            (folder / f"{name}-p{protocol}").write_bytes(pickle.dumps(obj, protocol=protocol))
            expected[f"{name}-p{protocol}"] = fragment
    valid = _valid_batch()
    (folder / "valid").write_bytes(valid)
    for cut in [*range(0, len(valid), 53), *range(len(valid) - 40, len(valid))]:
        (folder / f"truncated-{cut:05d}").write_bytes(valid[:cut])
    rng = random.Random(17)
    structure = [*range(0, 200), *range(len(valid) - 120, len(valid))]  # the pickle's opcodes around the pixels
    for index in range(300):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 3)):
            where = rng.choice(structure) if index % 3 else rng.randrange(len(data))
            data[where] ^= rng.randint(1, 255)
        (folder / f"flipped-{index:03d}").write_bytes(bytes(data))

    done = subprocess.run([sys.executable, "-c", READER, str(folder)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the reader died (status {done.returncode}): {done.stderr[-2000:]}"
    results = json.loads(done.stdout)
    assert len(results) == len(list(folder.iterdir()))
    assert results.pop("valid") == "loaded"
    unexpected = {name: outcome for name, outcome in results.items() if not outcome.startswith(("refused", "loaded"))}
    assert unexpected == {}
    for name, fragment in expected.items():
        assert results[name].startswith("refused: ") and fragment in results[name], (name, results[name])
    truncated = {name: outcome for name, outcome in results.items() if name.startswith("truncated")}
    assert all(outcome.startswith("refused: ") for outcome in truncated.values()), truncated
    flipped = [outcome for name, outcome in results.items() if name.startswith("flipped")]
    assert sum(outcome.startswith("refused") for outcome in flipped) > 100  # most flips of the structure are caught


def test_a_crafted_batch_makes_the_dataset_unavailable_with_the_reason(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(_valid_batch())
    crafted, _ = crafted_batches()["dtype-build-object-flags"]
    (folder / "data_batch_3").write_bytes(pickle.dumps(crafted, protocol=2))
    with pytest.raises(DatasetUnavailable, match="data_batch_3: not a CIFAR-10 batch: refusing to load an object"):
        load_dataset("cifar10", root=str(tmp_path), val_size=0)
    (folder / "data_batch_3").write_bytes(_valid_batch())
    assert len(load_dataset("cifar10", root=str(tmp_path), val_size=0).train) == 5
    images, labels = read_cifar_batch(folder / "test_batch")
    assert images.shape == (1, 3, 32, 32) and labels.tolist() == [3]


# -- the other binary readers -----------------------------------------------------------------------------------

def _refused_clearly(read, path: Path) -> str:
    """'loaded', or the message of the ValueError `read(path)` raised naming the file; any other exception fails."""
    try:
        read(path)
    except ValueError as err:
        assert str(path) in str(err), str(err)
        return str(err)
    return "loaded"


def test_damaged_idx_files_get_clear_errors(tmp_path, monkeypatch):
    import gzip
    import struct

    from samscale.data import idx

    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    plain = bytes([0, 0, 0x08, 3]) + struct.pack(">3i", *images.shape) + images.tobytes()
    cases = {
        "short-header": plain[:9], "no-dims": bytes([0, 0, 0x08, 200]), "negative-dim": plain[:4] + struct.pack(
            ">3i", -3, 28, 28) + images.tobytes(), "short-body": plain[:-1], "gzip-garbage": b"\x1f\x8b" + b"\x00" * 30,
        "gzip-truncated": gzip.compress(plain)[:-9], "gzip-bomb": gzip.compress(b"\x00" * 5000),
    }
    monkeypatch.setattr(idx, "MAX_BYTES", 4096)  # the bomb decompresses past the (here small) limit
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        message = _refused_clearly(idx.read_idx, tmp_path / name)
        assert message != "loaded", name
    assert "decompresses to more than 4096 bytes" in _refused_clearly(idx.read_idx, tmp_path / "gzip-bomb")
    assert "promises 200 dimensions" in _refused_clearly(idx.read_idx, tmp_path / "no-dims")
    rng = random.Random(3)
    packed = gzip.compress(plain)
    outcomes = []
    for index in range(150):
        data = bytearray(packed if index % 2 else plain)
        data[rng.randrange(len(data) if index % 3 else 30)] ^= rng.randint(1, 255)
        (tmp_path / "flipped").write_bytes(bytes(data))
        outcomes.append(_refused_clearly(idx.read_idx, tmp_path / "flipped"))
    assert 0 < sum(outcome != "loaded" for outcome in outcomes) < len(outcomes)


def test_damaged_ogb_tables_get_clear_errors(tmp_path):
    import gzip

    from samscale.data.ogb_molecules import read_molecule_table, read_split_index

    good = b"smiles,task1,mol_id\nCCO,1,0\nCCN,,1\n"
    cases = {"garbage.csv.gz": b"\x1f\x8b" + bytes(range(40)), "truncated.csv.gz": gzip.compress(good)[:-12],
             "not-gzip.csv.gz": good,
             "huge-field.csv.gz": gzip.compress(b"smiles,task1\n\"" + b"C" * 200_000 + b"\",1\n"),
             "latin1.csv.gz": gzip.compress("smiles,task1\nC\xe9,1\n".encode("latin-1"))}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert _refused_clearly(read_molecule_table, tmp_path / name) != "loaded", name
        assert _refused_clearly(lambda path: read_split_index(path, 3), tmp_path / name) != "loaded", name
    (tmp_path / "good.csv.gz").write_bytes(gzip.compress(good))
    smiles, labels, tasks = read_molecule_table(tmp_path / "good.csv.gz")
    assert smiles == ["CCO", "CCN"] and tasks == ["task1"] and labels[0, 0] == 1.0 and np.isnan(labels[1, 0])


def test_a_damaged_dataset_cache_is_rebuilt_not_trusted(tmp_path, monkeypatch):
    pytest.importorskip("mnist1d")
    monkeypatch.setenv("SAMSCALE_DATA", str(tmp_path))
    first = load_dataset("mnist1d", val_size=0, num_samples=200)
    (cache,) = (tmp_path / "mnist1d").glob("mnist1d-*.npz")
    for damage in (b"PK\x03\x04 torn", cache.read_bytes()[:200], b""):
        cache.write_bytes(damage)
        again = load_dataset("mnist1d", val_size=0, num_samples=200)
        assert torch_equal(again.train.x, first.train.x) and torch_equal(again.test.y, first.test.y)
        assert np.load(cache)["x"].shape == (160, 40)  # written again, whole
    np.savez(cache, x=np.array([None] * 3, dtype=object), y=np.zeros(3), x_test=np.zeros(1), y_test=np.zeros(1))
    assert torch_equal(load_dataset("mnist1d", val_size=0, num_samples=200).train.x, first.train.x)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
