"""RunSpec: the complete, validated description of one training run, and its stable run_id.

One RunSpec fully determines one run. Fields that change the numbers (data, model, optimizer, schedule, training,
sparsity) make up the run's identity; fields that only say where or how fast to run (runtime) or what to measure
afterwards (analysis) do not, so changing them never re-trains a finished run.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from samscale.errors import ConfigError, format_validation_error
from samscale.spec.catalog import ANALYSIS_NAMES, DATASET_NAMES, FAMILY_NAMES

OPTIMIZERS = ("sgd", "sam", "usam", "asam")
BASE_OPTIMIZERS = ("sgd", "adam", "adamw")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")
PRECISIONS = ("highest", "tf32", "bf16", "fp16")
"""Precision policies (`samscale.train.precision`): fp32 without TF32, fp32 with TF32, bf16 or fp16 autocast."""


class _Section(BaseModel):
    """Strict config section: unknown keys, NaN and ±inf are errors; assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _at_least_one(value: int | None) -> int | None:
    """Counts (epochs, batch sizes, threads, examples) must be >= 1; None keeps its field's meaning of 'default'."""
    if value is not None and value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


def _in_unit_interval(value: float) -> float:
    """Rates such as momentum and Adam's betas lie in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"must be in [0, 1), got {value}")
    return value


class DataSpec(_Section):
    """Which dataset, which split of it, and how it is corrupted (label noise) or sub-sampled."""

    name: str = "mnist"
    val_size: float | int = 5000
    split_seed: int = 0
    train_subset: int | None = None
    label_noise: float = 0.0
    noise_seed: int = 0
    augment: bool = True
    options: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASET_NAMES))}")
        return name

    @field_validator("label_noise")
    @classmethod
    def _noise_rate(cls, rate: float) -> float:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"label_noise must be in [0, 1), got {rate}")
        return rate

    @field_validator("val_size")
    @classmethod
    def _validation_size(cls, size: float | int) -> float | int:
        if isinstance(size, float) and not 0.0 <= size < 1.0:
            raise ValueError(f"val_size as a float is a fraction of the training set in [0, 1), got {size}; "
                             "give a count as an int")
        if size < 0:
            raise ValueError(f"val_size must be a count >= 0 or a fraction in [0, 1), got {size}")
        return size

    _train_subset = field_validator("train_subset")(_at_least_one)

    @field_validator("split_seed", "noise_seed")
    @classmethod
    def _seed(cls, seed: int) -> int:
        if seed < 0:
            raise ValueError(f"must be a seed >= 0, got {seed}")
        return seed


class ModelSpec(_Section):
    """A model family and its size on the family's ladder (MLP multiplier k, ResNet filters, ViT name, width)."""

    family: str = "mlp"
    size: float | int | str = 1
    options: dict[str, Any] = {}

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        if family not in FAMILY_NAMES:
            raise ValueError(f"unknown model family {family!r}; valid: {', '.join(sorted(FAMILY_NAMES))}")
        return family

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, size: Any) -> Any:
        """A numeric size must be a finite number > 0 (its family checks the rest when the model is built)."""
        if isinstance(size, bool) or not isinstance(size, (int, float, str)):
            raise ValueError(f"size must be a number > 0 or a family's size name, got {size!r}")
        if isinstance(size, (int, float)) and not (math.isfinite(size) and size > 0):
            raise ValueError(f"size must be a finite number > 0, got {size}")
        if isinstance(size, str) and not size.strip():
            raise ValueError("size must not be empty")
        return size


class OptimSpec(_Section):
    """Optimizer: SGD baseline or a SAM variant wrapped around a base optimizer (docs/PROTOCOL.md §2 semantics)."""

    name: Literal["sgd", "sam", "usam", "asam"] = "sgd"
    base: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    rho: float = 0.05
    m: int | None = None
    asam_eta: float = 0.0
    # With runtime.nproc > 1: "global" averages the clean gradients of all processes before the ascent (SAM on the
    # global batch); "per_device" perturbs each process with its own gradient (m-sharpness, m = per-process batch).
    sam_mode: Literal["global", "per_device"] = "global"

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, lr: float) -> float:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        return lr

    @field_validator("rho", "weight_decay", "asam_eta")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value

    _momentum = field_validator("momentum")(_in_unit_interval)

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"betas must both be in [0, 1), got {list(betas)}")
        return betas

    @field_validator("m")
    @classmethod
    def _positive_m(cls, m: int | None) -> int | None:
        if m is not None and m < 1:
            raise ValueError(f"m (examples per SAM perturbation) must be >= 1 or null, got {m}")
        return m

    @property
    def is_sam(self) -> bool:
        """Whether this optimizer takes the two-pass SAM step."""
        return self.name != "sgd"


class ScheduleSpec(_Section):
    """Learning-rate schedule over optimizer steps; step boundaries are fractions of the total steps."""

    kind: Literal["step", "cosine", "constant"] = "step"
    milestones: list[float] = [0.25, 0.5, 0.75]
    gamma: float = 0.1
    warmup_epochs: float = 0.0

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, milestones: list[float]) -> list[float]:
        if any(not 0.0 < f < 1.0 for f in milestones) or milestones != sorted(milestones):
            raise ValueError(f"milestones must be increasing fractions of training in (0, 1), got {milestones}")
        return milestones

    @field_validator("gamma")
    @classmethod
    def _positive_gamma(cls, gamma: float) -> float:
        if gamma <= 0:
            raise ValueError(f"gamma (the lr factor at each milestone) must be > 0, got {gamma}")
        return gamma

    @field_validator("warmup_epochs")
    @classmethod
    def _warmup(cls, epochs: float) -> float:
        if epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {epochs}")
        return epochs


class TrainSpec(_Section):
    """Training length, batch size and the seed of everything random in the run (init, order, augmentation)."""

    epochs: int = 100
    batch_size: int = 128
    seed: int = 0

    _positive = field_validator("epochs", "batch_size")(_at_least_one)


class SparsitySpec(_Section):
    """Pruning at initialization: none, random layer-wise uniform, or SNIP."""

    method: Literal["none", "random", "snip"] = "none"
    sparsity: float = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> "SparsitySpec":
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.method == "none" and self.sparsity > 0:
            raise ValueError(f"sparsity={self.sparsity} needs method 'random' or 'snip', got method 'none'")
        return self


class AnalysisSpec(_Section):
    """End-of-training measurements of the minimum found (not part of the run's identity)."""

    what: list[str] = []
    n_examples: int = 1024
    top_k: int = 5

    @field_validator("what")
    @classmethod
    def _known_analyses(cls, what: list[str]) -> list[str]:
        unknown = [name for name in what if name not in ANALYSIS_NAMES]
        if unknown:
            raise ValueError(f"unknown analyses {unknown}; valid: {', '.join(ANALYSIS_NAMES)}")
        return what

    _positive = field_validator("n_examples", "top_k")(_at_least_one)


MINATAR_GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


class RLSpec(_Section):
    """A reinforcement-learning run (DQN on a MinAtar game) instead of supervised training; off while `env` is None.

    One "epoch" is `steps_per_epoch` environment steps followed by `eval_episodes` evaluation episodes; `train.epochs`
    counts them and `train.batch_size` is the replay minibatch. ε decays linearly from `eps_start` to `eps_end` over
    `eps_decay_steps` steps. The environment's random streams derive from `train.seed` and `env_seed`.
    """

    env: Literal[MINATAR_GAMES] | None = None  # type: ignore[valid-type]
    steps_per_epoch: int = 10_000
    buffer_size: int = 100_000
    learning_starts: int = 5_000
    train_every: int = 1
    target_update: int = 1_000
    gamma: float = 0.99
    eps_start: float = 1.0
    eps_end: float = 0.1
    eps_decay_steps: int = 100_000
    eval_episodes: int = 10
    eval_epsilon: float = 0.05
    eval_max_steps: int = 10_000
    sticky_action_prob: float = 0.1
    env_seed: int = 0

    _positive = field_validator("steps_per_epoch", "buffer_size", "train_every", "target_update", "eps_decay_steps",
                                "eval_episodes", "eval_max_steps")(_at_least_one)

    @field_validator("gamma", "eps_start", "eps_end", "eval_epsilon", "sticky_action_prob")
    @classmethod
    def _probability(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"must be in [0, 1], got {value}")
        return value

    @field_validator("learning_starts", "env_seed")
    @classmethod
    def _non_negative_count(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value


class RuntimeSpec(_Section):
    """Where and how fast to run; never changes the run's identity."""

    device: str = "auto"
    threads: int | None = None
    compile: bool = False
    channels_last: bool = False  # CUDA only: on CPU, torch's channels-last convolutions are slow or crash
    bf16: bool = False  # shorthand for precision=bf16
    precision: Literal["highest", "tf32", "bf16", "fp16"] = "highest"  # TF32 and autocast of training
    analysis_precision: Literal["highest", "tf32"] = "highest"  # of the Hessian analysis (fp32 either way)
    cudnn_benchmark: bool = True  # CUDA only: autotuned convolution algorithms (fixed input shapes)
    loader_workers: int | None = None  # threads decoding streamed image folders (None: the process's cores)
    eval_batch_size: int = 1000
    train_eval_size: int = 10000  # final train loss/accuracy is measured on this many training examples
    keep_optimizer_state: bool = False  # finished runs keep only their weights unless this is set
    nproc: int = 1  # data-parallel processes for one run (torch.distributed); > 1 enters the run's identity

    _positive = field_validator("threads", "eval_batch_size", "train_eval_size", "nproc")(_at_least_one)

    @field_validator("loader_workers")
    @classmethod
    def _workers(cls, workers: int | None) -> int | None:
        if workers is not None and workers < 0:
            raise ValueError(f"must be >= 0 (0: decode in the training thread), got {workers}")
        return workers

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not DEVICE_PATTERN.fullmatch(device):
            raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N, mps, xpu, xpu:N")
        return device

    @model_validator(mode="after")
    def _bf16_shorthand(self) -> "RuntimeSpec":
        if self.bf16 and self.precision not in ("highest", "bf16"):
            raise ValueError(f"runtime.bf16=true asks for precision bf16 but runtime.precision={self.precision!r}; "
                             "set only runtime.precision")
        if self.bf16 and self.precision != "bf16":
            object.__setattr__(self, "precision", "bf16")
        return self


def dqn_problem(spec: "RunSpec") -> str | None:
    """What a DQN run (`rl.env` set) asks for that DQN training does not do, or None:
    several processes, a learning-rate schedule other than constant without warm-up, pruning, or curvature analyses."""
    if spec.rl.env is None:
        return None
    if spec.runtime.nproc > 1:  # one agent acting in one environment: its replay loop has no data-parallel form here
        return (f"runtime.nproc={spec.runtime.nproc}: a DQN run (rl.env={spec.rl.env!r}) trains on one process; use "
                "runtime.nproc=1 (sweep several seeds in parallel instead)")
    if spec.schedule.kind != "constant" or spec.schedule.warmup_epochs:
        return (f"DQN runs (rl.env: {spec.rl.env}) use a constant learning rate; set schedule.kind: constant (got "
                f"{spec.schedule.kind!r}) and schedule.warmup_epochs: 0 (got {spec.schedule.warmup_epochs})")
    if spec.sparsity.method != "none" or spec.analysis.what:
        return (f"DQN runs (rl.env: {spec.rl.env}) support neither pruning (got sparsity.method "
                f"{spec.sparsity.method!r}) nor curvature analyses (got analysis.what {spec.analysis.what})")
    return None


class RunSpec(_Section):
    """Everything that determines one run. `run_id` is a hash of the identity fields' canonical form."""

    name: str | None = None
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    optim: OptimSpec = OptimSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    train: TrainSpec = TrainSpec()
    sparsity: SparsitySpec = SparsitySpec()
    analysis: AnalysisSpec = AnalysisSpec()
    rl: RLSpec = RLSpec()
    runtime: RuntimeSpec = RuntimeSpec()

    IDENTITY: ClassVar[tuple[str, ...]] = ("data", "model", "optim", "schedule", "train", "sparsity")

    @model_validator(mode="after")
    def _consistent_sections(self) -> "RunSpec":
        if problem := dqn_problem(self):
            raise ValueError(problem)
        return self

    def identity(self) -> dict[str, Any]:
        """The fields that change a run's numbers, with settings that cannot matter normalized away."""
        ident = {key: getattr(self, key).model_dump(mode="json") for key in self.IDENTITY}
        optim = ident["optim"]
        if optim["name"] == "sgd":  # SAM-only settings cannot change an SGD run
            optim.update(rho=0.0, m=None, asam_eta=0.0)
        elif optim["name"] != "asam":
            optim["asam_eta"] = 0.0
        if optim["base"] == "sgd":
            optim["betas"] = None
        else:
            optim.update(momentum=None, nesterov=None)
        if ident["schedule"]["kind"] != "step":
            ident["schedule"].update(milestones=None, gamma=None)
        # Several processes change the numbers (BatchNorm normalizes per process; per-device SAM perturbs per
        # process), one does not: only then do the process count and SAM mode enter, so one-process ids never move.
        sam_mode = optim.pop("sam_mode")
        if self.runtime.nproc > 1:
            ident["processes"] = {"nproc": self.runtime.nproc, "sam_mode": sam_mode if self.optim.is_sam else None}
        if self.rl.env is not None:  # supervised runs keep their ids: the rl section enters only when it is used
            ident["rl"] = self.rl.model_dump(mode="json")
        return ident

    @property
    def run_id(self) -> str:
        """Stable 16-hex-digit id: sha256 of the canonical JSON of `identity()`."""
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def label(self) -> str:
        """Short human-readable label: family, size, optimizer, rho, seed."""
        opt = self.optim.name if self.optim.name == "sgd" else f"{self.optim.name}(rho={self.optim.rho:g})"
        return f"{self.model.family}[{self.model.size}] {opt} seed={self.train.seed}"

    def flat(self) -> dict[str, Any]:
        """Dotted-key view of every field (e.g. `optim.rho`), used for tables and grid axes."""
        return flatten(self.model_dump(mode="json"))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys; lists and leaf values are kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "options":
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `tree['a']['b'] = value` for `dotted='a.b'`, creating sub-dicts as needed."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
    node[leaf] = value


def check_field(dotted: str) -> None:
    """Raise ConfigError unless `dotted` names a field of RunSpec that a study may set (`optim.rho`, `data.options.x`).

    The message names the unknown part and lists the valid fields of its section, so `optim.rhoo` reads
    "unknown field optim.rhoo; valid fields of optim: name, base, lr, ...".
    """
    section: type[BaseModel] = RunSpec
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        fields = section.model_fields
        if part not in fields:
            owner = ".".join(parts[:depth]) or "RunSpec"
            raise ConfigError(f"unknown field {dotted}; valid fields of {owner}: {', '.join(fields)}")
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = annotation
        elif part == "options" or depth == len(parts) - 1:
            return  # free-form options accept any key; a leaf ends the name
        else:
            raise ConfigError(f"unknown field {dotted}: {'.'.join(parts[:depth + 1])} is a value, not a section")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `--set key=value` override; the value is read as YAML (numbers, lists, null, strings)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.rho=0.1)")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({_yaml_problem(err)})") from None


def build_spec(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), where: str = "") -> RunSpec:
    """Validate a RunSpec from a dict plus `key=value` overrides; errors name the field, value and valid choices."""
    if not isinstance(data or {}, dict):
        raise ConfigError(f"{where or 'run spec'}: expected a mapping of sections (data, model, optim, ...), "
                          f"got {type(data).__name__}")
    try:
        tree = json.loads(json.dumps(data or {}))
    except TypeError as err:
        raise ConfigError(f"{where or 'run spec'}: only plain values (numbers, strings, lists, mappings) are "
                          f"allowed ({err})") from None
    for text in overrides:
        set_dotted(tree, *parse_override(text))
    try:
        return RunSpec.model_validate(tree)
    except ValidationError as err:
        message = format_validation_error(err, model=RunSpec)
        raise ConfigError(f"{where}: {message}" if where else message) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from disk with a clear error when the file is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(err)}") from None
    except (UnicodeDecodeError, OSError) as err:
        raise ConfigError(f"cannot read {path} as a YAML text file ({err})") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(content).__name__}")
    return content


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line on what is wrong in a YAML text and where (line and column, counted from 1)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunSpec:
    """Load and validate a RunSpec YAML file with optional `key=value` overrides."""
    return build_spec(load_yaml(path), overrides, where=str(path))
