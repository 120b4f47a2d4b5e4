"""Concatenated graphs (samscale's `gcn` family) vs the padded dense layout it replaced: step speed and memory.

Speed: one training step (forward + backward) on batches of 128 solubility molecules, the `gcn` family on a
concatenated `GraphSet` (index_add aggregation) against the previous padded layout, reproduced here as
`PaddedGCN` with the same weights on (B, N, 31 + N) tensors (features, then rows of Â; N the largest molecule), and,
when torch-geometric is installed, PyG's GCNConv on a collated `Batch`. All compute the same function (checked
first). Also the cost of forming a batch: a GraphSet index against the padded gather and PyG's collation. Median and
minimum over repetitions, variants interleaved in one process; the machine may be shared, so the load average is
printed and only ratios mean much.

Memory: the OGB loader on a generated dataset in OGB's layout (`--molecules`, default 20,000, small molecules):
bytes held per molecule (graphs and labels) and the peak resident memory of loading, projected to ogbg-molpcba's
437,929 molecules at its published means (25.97 atoms and 28.11 bonds per molecule, 128 tasks).

    python benchmarks/bench_gcn.py --width 300 --reps 20
"""
from __future__ import annotations

import argparse
import gzip
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

PCBA = {"molecules": 437_929, "atoms": 25.97, "bonds": 28.11, "tasks": 128}


class PaddedGCN(nn.Module):
    """The `gcn` family as it was on padded dense batches, sharing a concatenated model's weights."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.embed, self.layers, self.head, self.in_features = model.embed, model.layers, model.head, model.in_features

    def forward(self, x: Tensor) -> Tensor:
        features, adjacency = x[..., : self.in_features], x[..., self.in_features:]
        mask = features[..., :1]
        real = (mask[..., 0] > 0,)
        h = self.embed(features[real]).new_zeros(*features.shape[:2], self.embed.out_features)
        h = h.index_put(real, self.embed(features[real]))
        for layer in self.layers:
            z = h.new_zeros(h.shape).index_put(real, layer(h[real]))
            h = h + torch.relu(adjacency @ z) * mask
        return self.head(h.sum(dim=1) / mask.sum(dim=1).clamp_min(1.0))


def pad(graphs) -> Tensor:
    """A GraphSet as the old (G, N, F + N) float32 layout: features, then the rows of Â = D^-½ (A + I) D^-½."""
    counts = graphs.node_counts().tolist()
    n_max, width = max(counts), graphs.nodes.shape[1]
    out = torch.zeros(len(graphs), n_max, width + n_max)
    for g, n in enumerate(counts):
        one = graphs[g:g + 1]
        a = torch.eye(n, dtype=torch.float64)
        edges = one.edges.long()
        a[edges[:, 0], edges[:, 1]] = a[edges[:, 1], edges[:, 0]] = 1.0
        scale = a.sum(1).rsqrt()
        out[g, :n, :width] = one.nodes.float()
        out[g, :n, width:width + n] = (a * scale[:, None] * scale[None, :]).float()
    return out


def _time(step, reps: int) -> tuple[float, float]:
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), min(seconds)


def speed(args: argparse.Namespace) -> None:
    from samscale.data import load_dataset
    from samscale.models.registry import build_model

    data = load_dataset("solubility", val_size=0)
    x, y = data.train.x[: args.batch], data.train.y[: args.batch]
    model = build_model("gcn", args.width, input_shape=data.input_shape, num_classes=3,
                        generator=torch.Generator().manual_seed(0))
    padded_model, padded = PaddedGCN(model), pad(x)
    all_padded = pad(data.train.x)
    print(f"max |concatenated - padded| output difference: {(model(x) - padded_model(padded)).abs().max():.2e}")
    loss = nn.CrossEntropyLoss()
    steps = {"concatenated step": lambda: loss(model(x), y).backward(),
             "padded step": lambda: loss(padded_model(padded), y).backward()}
    index = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: args.batch]
    batching = {"GraphSet index": lambda: data.train.x[index], "padded gather": lambda: all_padded[index]}
    try:
        from torch_geometric.data import Batch, Data
        from torch_geometric.nn import GCNConv, global_mean_pool
    except ImportError:
        print("torch-geometric not installed: PyG rows skipped")
    else:
        class PygGCN(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.convs = nn.ModuleList(GCNConv(args.width, args.width) for _ in model.layers)
                with torch.no_grad():
                    for conv, layer in zip(self.convs, model.layers):
                        conv.lin.weight.copy_(layer.weight)
                        conv.bias.copy_(layer.bias)

            def forward(self, batch) -> Tensor:
                h = model.embed(batch.x)
                for conv in self.convs:
                    h = h + torch.relu(conv(h, batch.edge_index))
                return model.head(global_mean_pool(h, batch.batch))

        with torch.no_grad():
            for layer in model.layers:  # GCNConv adds its bias after propagation: equal outputs need zero biases
                layer.bias.zero_()
        graphs = [Data(x=g.nodes.float(), edge_index=torch.cat([g.edges.long().T, g.edges.long().T.flip(0)], 1))
                  for g in (data.train.x[i:i + 1] for i in range(len(data.train)))]
        pyg, batch = PygGCN(), Batch.from_data_list(graphs[: args.batch])
        print(f"max |concatenated - PyG| output difference: {(model(x) - pyg(batch)).abs().max():.2e}")
        steps["PyG step"] = lambda: loss(pyg(batch), y).backward()
        batching["PyG collate"] = lambda: Batch.from_data_list([graphs[i] for i in index])
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in [*steps, *batching]}
    for _ in range(3):  # interleaved rounds, so that load changes hit every variant
        for name, step in {**steps, **batching}.items():
            model.zero_grad()
            results[name].append(_time(step, args.reps))
    largest = int(data.train.x.node_counts().max())
    print(f"width {args.width}, batch {args.batch} (padded to {largest} atoms), threads {args.threads}, "
          f"load average {os.getloadavg()}")
    base = statistics.median(r[0] for r in results["concatenated step"])
    for name, rounds in results.items():
        median, best = statistics.median(r[0] for r in rounds), min(r[1] for r in rounds)
        ratio = f"   {median / base:5.2f}× the concatenated step" if name.endswith("step") else ""
        print(f"  {name:18s} median {median * 1e3:8.2f} ms   min {best * 1e3:8.2f} ms{ratio}")


def _generated_folder(folder: Path, n: int, tasks: int) -> None:
    rng = np.random.default_rng(0)
    (folder / "mapping").mkdir(parents=True)
    cells = rng.choice(np.array(["", "0", "1"]), size=(n, tasks), p=[0.5, 0.4, 0.1])
    with gzip.open(folder / "mapping" / "mol.csv.gz", "wt") as handle:
        handle.write(",".join([*(f"t{t}" for t in range(tasks)), "smiles", "mol_id"]) + "\n")
        for i in range(n):
            smiles = ("c1ccccc1" if i % 3 == 0 else "") + "C" * (1 + i % 9) + ("", "O", "N", "Cl")[(i // 9) % 4]
            handle.write(",".join([*cells[i], smiles, str(i)]) + "\n")
    (folder / "split" / "scaffold").mkdir(parents=True)
    order = rng.permutation(n)
    for name, rows in zip(("train", "valid", "test"), np.split(order, [int(0.8 * n), int(0.9 * n)])):
        with gzip.open(folder / "split" / "scaffold" / f"{name}.csv.gz", "wt") as handle:
            handle.write("".join(f"{r}\n" for r in rows))


def _load_and_measure(folder: str, warm: str) -> None:
    """In a fresh process: warm up on a tiny folder (imports, RDKit), then load `folder`; prints one line of numbers."""
    from samscale.data import load_dataset

    load_dataset("ogbg-molpcba", root=warm, val_size=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    data = load_dataset("ogbg-molpcba", root=folder, val_size=0)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    splits = (data.train, data.val, data.test)
    atoms = sum(int(s.x.nodes.shape[0]) for s in splits)
    bonds = sum(int(s.x.edges.shape[0]) for s in splits)
    held = sum(s.x.nbytes() + s.y.nbytes for s in splits)
    print(before, peak, held, atoms, bonds, seconds, data.train.x.nodes.shape[1])


def memory(args: argparse.Namespace) -> None:
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        folder, warm = Path(tmp) / "ogbg-molpcba", Path(tmp) / "warm"
        _generated_folder(folder, args.molecules, PCBA["tasks"])
        _generated_folder(warm, 50, PCBA["tasks"])
        out = subprocess.run([sys.executable, __file__, "--child", str(folder), str(warm)], check=True,
                             capture_output=True, text=True).stdout.split()
    before, peak, held, atoms, bonds = (int(v) for v in out[:5])
    seconds, per_atom = float(out[5]), int(out[6])
    n = args.molecules
    per_bond, per_graph = 8, 16 + 4 * PCBA["tasks"]
    assert held == per_atom * atoms + per_bond * bonds + per_graph * n + 3 * 16, held  # the three splits' offsets
    projected = PCBA["molecules"] * (per_atom * PCBA["atoms"] + per_bond * PCBA["bonds"] + per_graph)
    dense = PCBA["molecules"] * 4 * 100 * (per_atom + 100)  # the old layout at 100 atoms (the largest has more)
    print(f"{n:,} generated molecules ({atoms / n:.2f} atoms, {bonds / n:.2f} bonds each, {PCBA['tasks']} tasks), "
          f"loaded in {seconds:.1f} s in a fresh process, load average {os.getloadavg()}")
    print(f"  held: {held / n:,.0f} bytes per molecule ({per_atom} per atom, {per_bond} per bond, {per_graph} per "
          f"molecule for offsets and labels)")
    print(f"  peak resident memory of loading: +{(peak - before) / 2**20:,.1f} MiB above the {before / 2**20:,.0f} MiB "
          f"after imports, {(peak - before) / n:,.0f} bytes per molecule (held data, SMILES, chunks in flight)")
    transient = max(peak - before - held, 0) / n
    resident = projected + PCBA["molecules"] * transient
    print(f"  ogbg-molpcba projected: {projected / 2**30:.2f} GiB held, {resident / 2**30:.2f} GiB peak resident "
          f"while loading (held at its means plus the {transient:,.0f} bytes of loading overhead per molecule "
          f"measured here), against {dense / 2**30:,.0f} GiB for the padded layout at 100 atoms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--molecules", type=int, default=20_000)
    parser.add_argument("--only", choices=("speed", "memory"), default=None)
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "WARM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _load_and_measure(*args.child)
    torch.set_num_threads(args.threads)
    if args.only != "speed":
        memory(args)
    if args.only != "memory":
        speed(args)


if __name__ == "__main__":
    sys.exit(main())
