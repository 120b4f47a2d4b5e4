"""Dense padded GCN (samscale's `gcn` family) vs PyTorch Geometric's sparse GCNConv on the solubility molecules.

Why the `gcn` family is plain torch: this measures, for one training step (forward + backward) on batches of 128
molecules, the dense padded layout against PyG's message passing with the same weights, plus PyG's per-batch
collation (`Batch.from_data_list`), which the dense layout replaces by one index gather. Both models compute the
same function (checked before timing: PyG's GCNConv adds its bias after propagation, so biases are zeroed for the
check). Median and minimum seconds over repetitions, the two variants interleaved in one process; the machine may
be shared, so the load average is printed. Needs `pip install torch-geometric` (not a samscale dependency).

    python benchmarks/bench_gcn.py --width 300 --reps 20
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn


def _pyg_graphs(x: torch.Tensor, in_features: int) -> list:
    from torch_geometric.data import Data

    graphs = []
    for packed in x:
        n = int(packed[:, 0].sum())
        adjacency = packed[:n, in_features:in_features + n]
        edges = (adjacency > 0).nonzero().T
        edges = edges[:, edges[0] != edges[1]]  # GCNConv adds the self-loops itself
        graphs.append(Data(x=packed[:n, :in_features], edge_index=edges))
    return graphs


class PygGCN(nn.Module):
    """The `gcn` family's architecture on PyG's GCNConv, weights copied from a dense model."""

    def __init__(self, dense: nn.Module) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        width = dense.embed.out_features
        self.embed, self.head = dense.embed, dense.head
        self.convs = nn.ModuleList(GCNConv(width, width) for _ in dense.layers)
        with torch.no_grad():
            for conv, layer in zip(self.convs, dense.layers):
                conv.lin.weight.copy_(layer.weight)
                conv.bias.copy_(layer.bias)

    def forward(self, batch) -> torch.Tensor:
        from torch_geometric.nn import global_mean_pool

        h = self.embed(batch.x)
        for conv in self.convs:
            h = h + torch.relu(conv(h, batch.edge_index))
        return self.head(global_mean_pool(h, batch.batch))


def _time(step, reps: int) -> tuple[float, float]:
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from torch_geometric.data import Batch

    from samscale.data import load_dataset
    from samscale.data.molecules import ATOM_FEATURES
    from samscale.models.registry import build_model

    data = load_dataset("solubility", val_size=0)
    x, y = data.train.x[: args.batch], data.train.y[: args.batch]
    dense = build_model("gcn", args.width, input_shape=data.input_shape, num_classes=3,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for layer in dense.layers:
            layer.bias.zero_()
    pyg = PygGCN(dense)
    graphs = _pyg_graphs(x, ATOM_FEATURES)
    batch = Batch.from_data_list(graphs)
    difference = (dense(x) - pyg(batch)).abs().max().item()
    print(f"max |dense - PyG| output difference: {difference:.2e}")
    loss = nn.CrossEntropyLoss()

    def dense_step() -> None:
        dense.zero_grad()
        loss(dense(x), y).backward()

    def pyg_step() -> None:
        pyg.zero_grad()
        loss(pyg(batch), y).backward()

    index = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: args.batch]
    all_graphs = _pyg_graphs(data.train.x, ATOM_FEATURES)
    results: dict[str, list[tuple[float, float]]] = {"dense step": [], "PyG step": [], "dense gather": [],
                                                     "PyG collate": []}
    for _ in range(3):  # interleave rounds so that load changes hit both
        results["dense step"].append(_time(dense_step, args.reps))
        results["PyG step"].append(_time(pyg_step, args.reps))
        results["dense gather"].append(_time(lambda: data.train.x[index], args.reps))
        results["PyG collate"].append(_time(lambda: Batch.from_data_list([all_graphs[i] for i in index]), args.reps))
    print(f"width {args.width}, batch {args.batch}, threads {args.threads}, load average {os.getloadavg()}")
    for name, rounds in results.items():
        median = statistics.median(r[0] for r in rounds)
        best = min(r[1] for r in rounds)
        print(f"  {name:13s} median {median * 1e3:8.2f} ms   min {best * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
