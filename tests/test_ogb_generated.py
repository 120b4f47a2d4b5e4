"""The ogbg-molpcba loader on a generated dataset in OGB's layout with 20,000 molecules: every split, label and atom
count against the generator, featurization against RDKit molecule by molecule, and the bytes held per molecule."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")

from samscale.data import load_dataset, make_loader  # noqa: E402
from samscale.data.molecules import ATOM_FEATURES, mol_to_graph, rdkit_chem  # noqa: E402
from samscale.models.registry import build_model  # noqa: E402

N_MOLECULES, N_TASKS = 20_000, 16
SUBSTITUENTS = ("", "O", "N", "Cl")


def generated_molecules(n: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """n SMILES of known size: a chain of 1–9 carbons ending in a substituent, every third after a benzene ring.
    Returns (SMILES, heavy atoms, bonds)."""
    smiles, atoms, bonds = [], [], []
    for i in range(n):
        chain, substituent, ring = 1 + i % 9, SUBSTITUENTS[(i // 9) % 4], i % 3 == 0
        smiles.append(("c1ccccc1" if ring else "") + "C" * chain + substituent)
        count = chain + (substituent != "") + 6 * ring
        atoms.append(count)
        bonds.append(count - 1 + ring)  # a tree, plus the ring's closing bond
    return smiles, np.array(atoms), np.array(bonds)


def write_generated_ogb_folder(folder, n: int = N_MOLECULES, tasks: int = N_TASKS, seed: int = 0):
    """OGB's layout (mapping/mol.csv.gz, split/scaffold/*.csv.gz) for n generated molecules; returns what was written:
    (SMILES, labels with NaN, split -> row indices, atoms, bonds)."""
    rng = np.random.default_rng(seed)
    smiles, atoms, bonds = generated_molecules(n)
    cells = rng.choice(np.array(["", "0", "1"]), size=(n, tasks), p=[0.5, 0.4, 0.1])
    header = ",".join([*(f"PCBA-{t}" for t in range(tasks)), "smiles", "mol_id"])
    lines = [header] + [",".join([*cells[i], smiles[i], f"mol{i}"]) for i in range(n)]
    (folder / "mapping").mkdir(parents=True)
    with gzip.open(folder / "mapping" / "mol.csv.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    order = rng.permutation(n)
    splits = {"train": order[: int(0.8 * n)], "valid": order[int(0.8 * n): int(0.9 * n)], "test": order[int(0.9 * n):]}
    (folder / "split" / "scaffold").mkdir(parents=True)
    for name, rows in splits.items():
        with gzip.open(folder / "split" / "scaffold" / f"{name}.csv.gz", "wt") as handle:
            handle.write("".join(f"{row}\n" for row in rows))
    labels = np.where(cells == "", np.nan, np.where(cells == "1", 1.0, 0.0)).astype(np.float32)
    return smiles, labels, splits, atoms, bonds


def test_the_ogb_loader_reads_20000_generated_molecules_unpadded(tmp_path):
    folder = tmp_path / "ogbg-molpcba"
    smiles, labels, splits, atoms, bonds = write_generated_ogb_folder(folder)
    data = load_dataset("ogbg-molpcba", root=str(folder), val_size=0)
    assert data.output_dim == N_TASKS and data.input_shape == (ATOM_FEATURES,)
    chem = rdkit_chem()
    for split, name in ((data.train, "train"), (data.val, "valid"), (data.test, "test")):
        rows = splits[name]
        assert len(split) == len(rows)
        np.testing.assert_array_equal(split.y.numpy(), labels[rows])
        graphs = split.x
        assert graphs.node_counts().tolist() == atoms[rows].tolist()
        assert (graphs.edge_ptr[1:] - graphs.edge_ptr[:-1]).tolist() == bonds[rows].tolist()
        # nothing padded: 31 feature bytes per atom, 8 per bond, 16 of offsets per graph (and one more offset pair)
        assert graphs.nbytes() == ATOM_FEATURES * atoms[rows].sum() + 8 * bonds[rows].sum() + 16 * (len(rows) + 1)
        for position in (0, len(rows) // 2, len(rows) - 1):  # molecule by molecule, as RDKit featurizes it
            features, edges = mol_to_graph(chem.MolFromSmiles(smiles[rows[position]]))
            one = graphs[position: position + 1]
            assert np.array_equal(one.nodes.numpy(), features) and np.array_equal(one.edges.numpy(), edges)
    per_molecule = sum(s.x.nbytes() + s.y.nbytes for s in (data.train, data.val, data.test)) / N_MOLECULES
    assert per_molecule == pytest.approx((ATOM_FEATURES * atoms.sum() + 8 * bonds.sum()) / N_MOLECULES + 16
                                         + 4 * N_TASKS, rel=1e-3)

    # a shuffled minibatch through the GCN equals each of its molecules alone (float64: no padding to leak through)
    model = build_model("gcn", 16, input_shape=data.input_shape, num_classes=N_TASKS, depth=2).double()
    x, _ = next(iter(make_loader(data.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0))))
    together = model(x)
    for g in (0, 31, 63):
        torch.testing.assert_close(together[g], model(x[g: g + 1])[0], rtol=1e-12, atol=1e-12)
