"""RunSpec: the complete, validated description of one training run, and its stable run_id.

One RunSpec fully determines one run. Fields that change the numbers (data, model, optimizer, schedule, training,
sparsity) make up the run's identity; fields that only say where or how fast to run (runtime) or what to measure
afterwards (analysis) do not, so changing them never re-trains a finished run.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from samscale.errors import ConfigError, format_validation_error
from samscale.spec.catalog import ANALYSIS_NAMES, DATASET_NAMES, FAMILY_NAMES

OPTIMIZERS = ("sgd", "sam", "usam", "asam")
BASE_OPTIMIZERS = ("sgd", "adam", "adamw")


class _Section(BaseModel):
    """Strict config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


class OptimSpec(_Section):
    """Optimizer: SGD baseline or a SAM variant wrapped around a base optimizer (PAPER.md §2 semantics)."""

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

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, lr: float) -> float:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        return lr

    @field_validator("rho", "weight_decay", "momentum", "asam_eta")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return value

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


class TrainSpec(_Section):
    """Training length, batch size and the seed of everything random in the run (init, order, augmentation)."""

    epochs: int = 100
    batch_size: int = 128
    seed: int = 0

    @field_validator("epochs", "batch_size")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value


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


class RuntimeSpec(_Section):
    """Where and how fast to run; never changes the run's identity."""

    device: str = "auto"
    threads: int | None = None
    compile: bool = False
    channels_last: bool = False  # CUDA only: on CPU, torch's channels-last convolutions are slow or crash
    bf16: bool = False
    eval_batch_size: int = 1000
    train_eval_size: int = 10000  # final train loss/accuracy is measured on this many training examples
    keep_optimizer_state: bool = False  # finished runs keep only their weights unless this is set


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
    runtime: RuntimeSpec = RuntimeSpec()

    IDENTITY: ClassVar[tuple[str, ...]] = ("data", "model", "optim", "schedule", "train", "sparsity")

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


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `--set key=value` override; the value is read as YAML (numbers, lists, null, strings)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.rho=0.1)")
    return key.strip(), yaml.safe_load(raw)


def build_spec(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), where: str = "") -> RunSpec:
    """Validate a RunSpec from a dict plus `key=value` overrides; errors name the field, value and valid choices."""
    tree = json.loads(json.dumps(data or {}))
    for text in overrides:
        set_dotted(tree, *parse_override(text))
    try:
        return RunSpec.model_validate(tree)
    except ValidationError as err:
        message = format_validation_error(err)
        raise ConfigError(f"{where}: {message}" if where else message) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from disk with a clear error when the file is missing or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    content = yaml.safe_load(path.read_text()) or {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(content).__name__}")
    return content


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunSpec:
    """Load and validate a RunSpec YAML file with optional `key=value` overrides."""
    return build_spec(load_yaml(path), overrides, where=str(path))
