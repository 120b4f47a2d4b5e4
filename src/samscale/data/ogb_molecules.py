"""OGB molecule property datasets (ogbg-molpcba and its binary-task kin) read from OGB's files, as multilabel graphs.

The dataset folder (`<data home>/ogbg-molpcba`, or `root`) holds OGB's on-disk layout, either directly or in the
`ogbg_molpcba` sub-folder that OGB's own downloader creates under its `root`:

    mapping/mol.csv.gz                 header row, then one row per molecule: one column per task, `smiles`,
                                       `mol_id`; a task cell is 0 or 1, empty where the molecule was not measured
    split/scaffold/train.csv.gz        row indices into mol.csv.gz, one per line, no header
    split/scaffold/valid.csv.gz
    split/scaffold/test.csv.gz

Splits: OGB's train is the training set, OGB's valid the validation set and OGB's test the test set, exactly. The
scaffold split puts molecules of one Murcko scaffold into one split, so a validation set carved at random from
training (samscale's usual protocol) would share scaffolds with training and choose ρ on an easier, differently
distributed set than the test; OGB's valid is therefore passed as the source's official validation split
(`SourceDataset.val`) and `load_dataset` carves nothing (it takes `val_size=0`). `train_subset` still keeps a
seeded subset of OGB's train.

Labels are (N, T) float32 targets, NaN where missing (task "multilabel"): the loss and OGB's average precision
count labelled entries only (`samscale.train.metrics`). Molecules are featurized from their SMILES by RDKit with
samscale's 31 one-hot atom features and their bonds (`samscale.data.molecules`), not OGB's 9 integer atom features,
so that the GCN family and every other molecule source share one input layout.

Memory: molecules are concatenated without padding (`samscale.data.graphs.GraphSet`, uint8 features, int32 bond
endpoints) and featurized one at a time, in chunks of `CHUNK` molecules, so no RDKit molecule outlives its row and
the table is read row by row. A molecule costs 31 bytes per atom, 8 per bond, 16 of offsets and 4 per task: about
1.5 kB for ogbg-molpcba's average molecule (26 atoms, 28 bonds, 128 tasks), 0.7 GB for all 437,929.
"""
from __future__ import annotations

import csv
import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from samscale.data.dataset import SourceDataset
from samscale.data.errors import reading
from samscale.data.locate import Candidate, first_available, skipped
from samscale.data.graphs import GraphSet
from samscale.data.molecules import ATOM_FEATURES, mol_to_graph, rdkit_chem
from samscale.data.paths import dataset_dir
from samscale.data.split import Split

MOLECULE_TABLE = "mapping/mol.csv.gz"
SPLIT_NAMES = ("train", "valid", "test")
SPLIT_SCHEME = "scaffold"
NON_TASK_COLUMNS = ("smiles", "mol_id")
PCBA_URL = "https://snap.stanford.edu/ogb/data/graphproppred/csv_mol_download/pcba.zip"
CHUNK = 8192
"""Molecules featurized (and rows of labels parsed) per chunk before they are concatenated."""
CELLS = {"": math.nan, "0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0}


@dataclass(frozen=True)
class OgbMolecules:
    """An OGB molecule table as read: SMILES, (G, T) labels with NaN for missing, task names and split indices."""

    smiles: list[str]
    labels: np.ndarray
    tasks: list[str]
    splits: dict[str, np.ndarray]


def _label(text: str, where: str) -> float:
    """A task cell: '' → NaN (not measured), '0'/'1' (also '0.0'/'1.0') → 0.0/1.0; anything else fails."""
    text = text.strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value not in (0.0, 1.0):
        raise ValueError(f"{where}: label {text!r} is not 0, 1 or empty (this loader reads binary-task OGB "
                         "datasets)")
    return value


def read_molecule_table(path: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(SMILES, (G, T) float32 labels with NaN for empty cells, task names) of OGB's `mapping/mol.csv.gz`, read row
    by row (labels gathered in float32 chunks, never as Python floats for the whole table)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    with reading(path, "a gzip-compressed CSV table"), gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or "smiles" not in header:
            raise ValueError(f"{path}: no 'smiles' column in the header {header}")
        tasks = [c for c in header if c not in NON_TASK_COLUMNS]
        if not tasks:
            raise ValueError(f"{path}: no task columns besides {list(NON_TASK_COLUMNS)} in the header {header}")
        smiles_at = header.index("smiles")
        task_at = [header.index(task) for task in tasks]
        smiles: list[str] = []
        chunks: list[np.ndarray] = []
        rows: list[list[float]] = []
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}: line {line} has {len(row)} cells, the header {len(header)}")
            smiles.append(row[smiles_at])
            try:
                rows.append([CELLS[row[i]] for i in task_at])
            except KeyError:
                rows.append([_label(row[i], f"{path}: line {line}, column {header[i]!r}") for i in task_at])
            if len(rows) == CHUNK:
                chunks.append(np.array(rows, dtype=np.float32))
                rows.clear()
    chunks.append(np.array(rows, dtype=np.float32).reshape(len(rows), len(tasks)))
    return smiles, np.concatenate(chunks), tasks


def read_split_index(path: str | Path, size: int) -> np.ndarray:
    """The row indices of one OGB split file (one integer per line, no header), each in [0, size)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    with reading(path, "a gzip-compressed list of row indices"), gzip.open(path, "rt") as handle:
        lines = [line.strip() for line in handle]
    try:
        index = np.array([int(line) for line in lines if line], dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"{path}: not one integer row index per line ({err})") from None
    if len(index) and (index.min() < 0 or index.max() >= size):
        bad = int(index.min() if index.min() < 0 else index.max())
        raise ValueError(f"{path}: row index {bad} is outside the {size} molecules of {MOLECULE_TABLE}")
    return index


def read_ogb_folder(folder: str | Path) -> OgbMolecules:
    """The molecule table and the scaffold split of an OGB molecule dataset folder; splits must be disjoint."""
    folder = Path(folder)
    smiles, labels, tasks = read_molecule_table(folder / MOLECULE_TABLE)
    splits = {name: read_split_index(folder / "split" / SPLIT_SCHEME / f"{name}.csv.gz", len(smiles))
              for name in SPLIT_NAMES}
    seen = np.concatenate(list(splits.values()))
    if len(np.unique(seen)) != len(seen):
        raise ValueError(f"{folder / 'split' / SPLIT_SCHEME}: a row index is listed twice (within or across "
                         f"{', '.join(SPLIT_NAMES)})")
    return OgbMolecules(smiles, labels, tasks, splits)


def _download(name: str, folder: Path) -> OgbMolecules:
    """Download with the `ogb` package (online) into `folder`; OGB writes `folder/ogbg_<name>`."""
    try:
        from ogb.graphproppred import GraphPropPredDataset
    except ImportError:
        raise FileNotFoundError(2, "package 'ogb' is not installed (pip install ogb)", "ogb") from None
    GraphPropPredDataset(name=name, root=str(folder))
    return read_ogb_folder(folder / name.replace("-", "_"))


def featurize(name: str, smiles: list[str], rows: np.ndarray) -> GraphSet:
    """The molecules at `rows` as one concatenated GraphSet, parsed and featurized `CHUNK` at a time."""
    chem = rdkit_chem()
    parts = []
    for begin in range(0, len(rows), CHUNK):
        graphs = []
        for row in rows[begin:begin + CHUNK].tolist():
            mol = chem.MolFromSmiles(smiles[row])
            if mol is None:
                raise ValueError(f"{name}: molecule {row} has an invalid SMILES {smiles[row]!r}")
            graphs.append(mol_to_graph(mol))
        parts.append(GraphSet.from_graphs(graphs, ATOM_FEATURES))
    return GraphSet.concat(parts, ATOM_FEATURES)


def ogb_molecule_source(name: str, table: OgbMolecules, where: str) -> SourceDataset:
    """Featurize an OGB molecule table into a multilabel SourceDataset with OGB's train/valid/test."""
    def split(part: str) -> Split:
        rows = table.splits[part]
        return Split(featurize(name, table.smiles, rows), torch.from_numpy(table.labels[rows]))

    sizes = "/".join(f"{len(table.splits[s]):,}" for s in SPLIT_NAMES)
    return SourceDataset(
        train=split("train"),
        val=split("valid"),
        test=split("test"),
        task="multilabel",
        num_classes=None,
        output_dim=len(table.tasks),
        input_shape=(ATOM_FEATURES,),
        source=f"OGB {name} ({where}); {len(table.smiles):,} molecules, {len(table.tasks)} binary tasks, "
               f"{SPLIT_SCHEME} split {sizes} train/valid/test (OGB's valid is the validation split), "
               "concatenated graphs",
    )


def build_ogb_molecules(name: str, *, root: str | None, download: bool, url: str = "") -> SourceDataset:
    """An OGB binary-task molecule dataset `name` from its folder (or downloaded with `ogb` when `download`)."""
    folder = dataset_dir(name, root)
    nested = folder / name.replace("-", "_")
    raw = f"the raw zip ({url}), unzipped, " if url else "the dataset's raw zip from OGB, unzipped, "
    table, where = first_available(name, [
        Candidate(str(folder), lambda: read_ogb_folder(folder)),
        Candidate(str(nested), lambda: read_ogb_folder(nested)),
        Candidate(f"download with the ogb package into {folder}",
                  (lambda: _download(name, folder)) if download else skipped("not attempted (download=False)")),
    ], fixes=[
        f"online: pip install ogb, then python -c \"from ogb.graphproppred import GraphPropPredDataset; "
        f"GraphPropPredDataset('{name}', root='{folder}')\" (PygGraphPropPredDataset writes the same files; "
        "or pass download=True with ogb installed)",
        f"or put {raw}with its mapping/ and split/ folders in {folder} (or pass root=DIR, or set $SAMSCALE_DATA)",
    ])
    return ogb_molecule_source(name, table, where)


def build_ogbg_molpcba(*, root: str | None, download: bool, augment: bool) -> SourceDataset:
    """ogbg-molpcba: 437,929 molecules, 128 binary tasks with missing labels, scaffold split; `augment` has no
    effect."""
    return build_ogb_molecules("ogbg-molpcba", root=root, download=download, url=PCBA_URL)


__all__ = ["OgbMolecules", "build_ogb_molecules", "build_ogbg_molpcba", "featurize", "read_molecule_table",
           "read_ogb_folder", "read_split_index"]
