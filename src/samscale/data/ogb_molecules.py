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
samscale's 31 one-hot atom features and dense Â rows (`samscale.data.molecules`), not OGB's 9 integer atom features,
so that the GCN family and every other molecule source share one input layout.

Memory: the dense layout stores G × N × (31 + N) float32 numbers for G molecules padded to N atoms. For ogbg-molpcba
(437,929 molecules, N = the largest molecule) that is far more than a machine's memory, so the loader checks the
size after parsing the SMILES and before packing, and fails with the numbers instead of being killed mid-way.
"""
from __future__ import annotations

import csv
import gzip
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from samscale.data.dataset import SourceDataset
from samscale.data.errors import ConfigError, reading
from samscale.data.locate import Candidate, first_available, skipped
from samscale.data.molecules import ATOM_FEATURES, mol_to_graph, pack_graphs, rdkit_chem
from samscale.data.options import non_negative_int
from samscale.data.paths import dataset_dir
from samscale.data.split import Split

MOLECULE_TABLE = "mapping/mol.csv.gz"
SPLIT_NAMES = ("train", "valid", "test")
SPLIT_SCHEME = "scaffold"
NON_TASK_COLUMNS = ("smiles", "mol_id")
PCBA_URL = "https://snap.stanford.edu/ogb/data/graphproppred/csv_mol_download/pcba.zip"


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
    """(SMILES, (G, T) float32 labels with NaN for empty cells, task names) of OGB's `mapping/mol.csv.gz`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    with reading(path, "a gzip-compressed CSV table"), gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(io.StringIO(handle.read()))
        header = next(reader, None)
        if header is None or "smiles" not in header:
            raise ValueError(f"{path}: no 'smiles' column in the header {header}")
        tasks = [c for c in header if c not in NON_TASK_COLUMNS]
        if not tasks:
            raise ValueError(f"{path}: no task columns besides {list(NON_TASK_COLUMNS)} in the header {header}")
        smiles_at = header.index("smiles")
        task_at = [header.index(task) for task in tasks]
        smiles, labels = [], []
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}: line {line} has {len(row)} cells, the header {len(header)}")
            smiles.append(row[smiles_at])
            labels.append([_label(row[i], f"{path}: line {line}, column {header[i]!r}") for i in task_at])
    return smiles, np.array(labels, dtype=np.float32).reshape(len(smiles), len(tasks)), tasks


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


def dense_bytes(n_graphs: int, nodes: int) -> int:
    """Bytes of G graphs in the dense (N, F + N) float32 layout of `samscale.data.molecules.pack_graphs`."""
    return 4 * n_graphs * nodes * (ATOM_FEATURES + nodes)


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def ogb_molecule_source(name: str, table: OgbMolecules, max_nodes: int, where: str) -> SourceDataset:
    """Featurize and pack an OGB molecule table into a multilabel SourceDataset with OGB's train/valid/test."""
    chem = rdkit_chem()
    max_nodes = non_negative_int("max_nodes", max_nodes)
    used = np.concatenate([table.splits[s] for s in SPLIT_NAMES])
    mols = {}
    for row in used.tolist():
        mol = chem.MolFromSmiles(table.smiles[row])
        if mol is None:
            raise ValueError(f"{name}: molecule {row} has an invalid SMILES {table.smiles[row]!r}")
        mols[row] = mol
    largest = max((mol.GetNumAtoms() for mol in mols.values()), default=1)
    nodes = max_nodes or largest
    needed, available = dense_bytes(len(used), nodes), physical_memory()
    if available is not None and needed > available:
        raise ConfigError(f"{name}: {len(used):,} molecules as dense graphs padded to {nodes} atoms need "
                          f"{needed / 2**30:,.0f} GiB ({len(used):,} × {nodes} × {ATOM_FEATURES + nodes} float32), "
                          f"more than this machine's {available / 2**30:,.0f} GiB; the dense layout of the gcn "
                          "family does not scale to this dataset here")

    def split(part: str) -> Split:
        rows = table.splits[part]
        graphs = [mol_to_graph(mols[row]) for row in rows.tolist()]
        return Split(pack_graphs(graphs, nodes), torch.from_numpy(table.labels[rows]))

    sizes = "/".join(f"{len(table.splits[s]):,}" for s in SPLIT_NAMES)
    return SourceDataset(
        train=split("train"),
        val=split("valid"),
        test=split("test"),
        task="multilabel",
        num_classes=None,
        output_dim=len(table.tasks),
        input_shape=(nodes, ATOM_FEATURES + nodes),
        source=f"OGB {name} ({where}); {len(table.smiles):,} molecules, {len(table.tasks)} binary tasks, "
               f"{SPLIT_SCHEME} split {sizes} train/valid/test (OGB's valid is the validation split), "
               f"graphs padded to {nodes} atoms",
    )


def build_ogb_molecules(
    name: str, *, root: str | None, download: bool, max_nodes: int = 0, url: str = "",
) -> SourceDataset:
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
    return ogb_molecule_source(name, table, max_nodes, where)


def build_ogbg_molpcba(*, root: str | None, download: bool, augment: bool, max_nodes: int = 0) -> SourceDataset:
    """ogbg-molpcba: 437,929 molecules, 128 binary tasks with missing labels, scaffold split; `augment` has no
    effect. `max_nodes` pads every graph to that many atoms (0: the largest molecule's count)."""
    return build_ogb_molecules("ogbg-molpcba", root=root, download=download, max_nodes=max_nodes, url=PCBA_URL)


__all__ = ["OgbMolecules", "build_ogb_molecules", "build_ogbg_molpcba", "dense_bytes",
           "read_molecule_table", "read_ogb_folder", "read_split_index"]
